"""Where each user is served now, what they hold, and what each region still has free.

Placement needs the state it decides from. A user holding an *active* reservation (the
router moved them onto it) is served from that reservation's region with its full allocation.
Everyone else is served where the telemetry last saw them (the hourly ``serving_region``), with
what a reactive autoscaler would have given them: the peak hourly p95 of each resource over the
last ``placement.current_usage_hours`` hours. A region's free capacity is the catalogue's
capacity minus its background utilisation (the newest ``region_status`` row) minus what
prewarm's live reservations hold there.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import pandas as pd
import pyarrow.dataset as ds

from core.regions import load_regions
from core.schema import RESOURCE_COLUMNS
from core.settings import Settings, get_settings
from features.aggregate import TIMESTAMP, USER_KEY
from features.repo.data_sources import OFFLINE_TABLES
from features.store import repo_path
from serving.provisioning.ledger import Ledger
from serving.provisioning.states import LIVE

CURRENT_COLUMNS: tuple[str, ...] = (USER_KEY, "current_region", *RESOURCE_COLUMNS)
CAPACITY_COLUMNS: tuple[str, ...] = ("region", *RESOURCE_COLUMNS)


def current_state(
    users: Iterable[str], now: datetime, settings: Settings | None = None
) -> pd.DataFrame:
    """One row per user (:data:`CURRENT_COLUMNS`): serving region and held allocation now.

    Users the telemetry never placed anywhere are served from their home region as far as the
    catalogue knows it; without even that they are left out, and placement reports them.
    """
    settings = settings or get_settings()
    wanted = pd.Index(sorted(set(users)), name=USER_KEY)
    observed = _observed(wanted, now, settings)
    held = _active_reservations(wanted, settings)
    frame = observed.reindex(wanted)
    if len(held):
        frame.loc[held.index] = held[list(frame.columns)]
    frame = frame.dropna(subset=["current_region"])
    frame[list(RESOURCE_COLUMNS)] = frame[list(RESOURCE_COLUMNS)].fillna(0.0).clip(lower=0.0)
    return frame.reset_index()[list(CURRENT_COLUMNS)]


def remaining_capacity(now: datetime, settings: Settings | None = None) -> pd.DataFrame:
    """Free capacity per region (:data:`CAPACITY_COLUMNS`) for prewarm's next reservations."""
    settings = settings or get_settings()
    catalogue = load_regions(settings.regions_file)
    regions = catalogue.to_frame().set_index("code")
    free = pd.DataFrame(
        {
            "cpu_cores": regions["capacity_vcpu"],
            "ram_gb": regions["capacity_ram_gb"],
            "storage_iops": regions["capacity_storage_iops"],
            "network_mbps": regions["capacity_network_gbps"] * 1000.0,
        }
    )
    busy = _background_utilisation(now, settings).reindex(free.index).fillna(0.0)
    free = free.mul(1.0 - busy, axis=0)
    ledger = Ledger.from_settings(settings)
    try:
        for reservation in ledger.reservations(states=LIVE):
            spec = reservation.held_spec
            for column in RESOURCE_COLUMNS:
                free.loc[reservation.region, column] -= getattr(spec, column)
    finally:
        ledger.dispose()
    return free.clip(lower=0.0).rename_axis("region").reset_index()[list(CAPACITY_COLUMNS)]


def _observed(users: pd.Index, now: datetime, settings: Settings) -> pd.DataFrame:
    """Latest serving region and recent peak p95 usage per user, from the hourly features."""
    hours = settings.placement.current_usage_hours
    since = pd.Timestamp(now).tz_convert("UTC") - timedelta(hours=hours)
    p95 = [f"{r}_p95" for r in RESOURCE_COLUMNS]
    table = _offline("user_hourly", settings)
    empty = pd.DataFrame(columns=["current_region", *RESOURCE_COLUMNS], index=users[:0])
    if table is None:
        return empty
    rows = table.to_table(
        columns=[USER_KEY, TIMESTAMP, "serving_region", *p95],
        filter=(ds.field(TIMESTAMP) > since)
        & (ds.field(TIMESTAMP) <= pd.Timestamp(now).tz_convert("UTC"))
        & ds.field(USER_KEY).isin(list(users)),
    ).to_pandas()
    if rows.empty:
        return empty
    rows = rows.sort_values(TIMESTAMP)
    latest = rows.dropna(subset=["serving_region"]).groupby(USER_KEY)["serving_region"].last()
    peak = rows.groupby(USER_KEY)[p95].max()
    peak.columns = list(RESOURCE_COLUMNS)
    return peak.join(latest.rename("current_region"), how="outer")[
        ["current_region", *RESOURCE_COLUMNS]
    ]


def _active_reservations(users: pd.Index, settings: Settings) -> pd.DataFrame:
    """Region and full allocation of each user's active reservation (the newest if several)."""
    ledger = Ledger.from_settings(settings)
    try:
        active = [r for r in ledger.reservations(states=("active",)) if r.user_id in users]
    finally:
        ledger.dispose()
    active.sort(key=lambda r: r.updated_at)
    rows = {
        r.user_id: {"current_region": r.region, **{c: getattr(r.spec, c) for c in RESOURCE_COLUMNS}}
        for r in active
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["current_region",
                                                                 *RESOURCE_COLUMNS])


def _background_utilisation(now: datetime, settings: Settings) -> pd.Series:
    """Each region's newest background utilisation at or before ``now`` (0 where unknown)."""
    table = _offline("region_status", settings)
    if table is None:
        return pd.Series(dtype=float)
    rows = table.to_table(
        columns=["region", TIMESTAMP, "utilisation"],
        filter=ds.field(TIMESTAMP) <= pd.Timestamp(now).tz_convert("UTC"),
    ).to_pandas()
    if rows.empty:
        return pd.Series(dtype=float)
    latest = rows.sort_values(TIMESTAMP).groupby("region")["utilisation"].last()
    return latest.astype(float).clip(0.0, 1.0).fillna(0.0)


def _offline(table: str, settings: Settings) -> ds.Dataset | None:
    source, _ = OFFLINE_TABLES[table]
    path = repo_path(settings) / source.path
    return ds.dataset(path, format="parquet") if path.exists() else None


