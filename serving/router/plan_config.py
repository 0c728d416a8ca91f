"""Turn a placement plan (the contract of ``serving.placement``) into a routing config.

The plan has one row per user and window; the router needs one allocation per user: the
window in force at ``now``, or else the user's next one. Users whose windows have all ended
are left out.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from serving.router.models import RESOURCES, Allocation, RoutingConfig, Thresholds

PLAN_COLUMNS: tuple[str, ...] = (
    "user_id",
    "window_start",
    "window_end",
    "current_region",
    "region",
    *RESOURCES,
    "expected_latency_ms",
)


def config_from_plan(
    plan: pd.DataFrame, version: int, now: datetime, thresholds: Thresholds | None = None
) -> RoutingConfig:
    """The routing config for ``plan`` as of ``now`` (validated: raises on a malformed plan)."""
    missing = [c for c in PLAN_COLUMNS if c not in plan.columns]
    if missing:
        raise ValueError(f"placement plan lacks column(s) {missing}")
    moment = pd.Timestamp(now)
    start = pd.to_datetime(plan["window_start"], utc=True)
    end = pd.to_datetime(plan["window_end"], utc=True)
    live = plan.assign(window_start=start, window_end=end)[end > moment]
    # In-force windows (start <= now) sort before future ones, then by start.
    live = live.assign(_future=live["window_start"] > moment)
    chosen = live.sort_values(["user_id", "_future", "window_start"]).drop_duplicates("user_id")
    users = [
        Allocation(
            user_id=row.user_id,
            region=row.region,
            current_region=row.current_region,
            cpu_cores=float(row.cpu_cores),
            ram_gb=float(row.ram_gb),
            storage_iops=float(row.storage_iops),
            network_mbps=float(row.network_mbps),
            expected_latency_ms=_optional(row.expected_latency_ms),
            window_start=row.window_start.to_pydatetime(),
            window_end=row.window_end.to_pydatetime(),
        )
        for row in chosen.itertuples(index=False)
    ]
    return RoutingConfig(version=version, thresholds=thresholds or Thresholds(), users=users)


def _optional(value: float) -> float | None:
    return None if pd.isna(value) else float(value)
