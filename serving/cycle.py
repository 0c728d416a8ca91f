"""The steps of one predict-and-provision cycle after batch prediction, as the DAG runs them.

``serving.predict`` writes a run's predicted profiles; then, each step one Airflow task taking
and returning small JSON-able dicts, all keyed by the same ``run_id`` and the cycle's ``now``:

1. :func:`place` — the Resource Prediction Engine on the run's predictions, the users' current
   state and the regions' free capacity; writes the plan under ``serving/plans/<run_id>/``.
2. :func:`provision` — the Pre-Allocation Manager holds warm capacity for every
   ``preallocate`` row (idempotency keys: a re-run creates nothing twice); in a dry run
   (forecast-only) it acts on nothing and says what it would have requested.
3. :func:`housekeep` — warms what finished booting, expires holds past their TTL, and
   reconciles the ledger with the provider (orphans released, lost ones re-requested).
4. :func:`routing_config` — the router's config for the plan's current window: each user's
   pre-allocated region and capacity where a hold exists, their current region otherwise.
5. :func:`push_routing_config` — pushes that config over the router's admin API.
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.settings import Settings, get_settings
from serving.current_state import current_state, remaining_capacity
from serving.placement import Plan, plan_placement, write_plan
from serving.placement.plan import PLAN_FILE, REQUEST_COLUMNS, UNPLACED_COLUMNS
from serving.predictions_store import read_predictions
from serving.provisioning.manager import PreAllocationManager
from serving.router.client import push_config
from serving.router.models import RoutingConfig
from serving.router.plan_config import config_from_plan

logger = logging.getLogger(__name__)

OUTCOMES_FILE = "outcomes.parquet"
HELD_OUTCOMES = frozenset({"created", "existing"})


def cycle_id(run_id: str) -> str:
    """A file-system-safe name for an Airflow run id (``manual__2026-…`` has ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") or "run"


def plan_dir(run_id: str, settings: Settings | None = None) -> Path:
    """Folder of the cycle's placement plan, outcomes and routing config."""
    settings = settings or get_settings()
    return settings.serving_dir / "plans" / cycle_id(run_id)


def place(run_id: str, now: datetime, settings: Settings | None = None) -> dict:
    """Plan every predicted user's region and allocation; write the plan, act on nothing."""
    settings = settings or get_settings()
    profiles, region_probs = read_predictions(cycle_id(run_id), settings)
    users = profiles["user_id"].unique()
    if len(users):
        current = current_state(users, now, settings)
        capacity = remaining_capacity(now, settings)
        plan = plan_placement(profiles, region_probs, current, capacity, settings, now=now)
    else:
        logger.warning("prediction run %s has no user: the plan is empty", run_id)
        plan = Plan(
            requests=pd.DataFrame(columns=list(REQUEST_COLUMNS)),
            unplaced=pd.DataFrame(columns=list(UNPLACED_COLUMNS)),
            summary={
                "users": 0, "requests": 0, "actions": {}, "unplaced": 0, "objective_usd": 0.0
            },
        )
    folder = write_plan(plan, plan_dir(run_id, settings))
    summary = plan.summary
    return {
        "run_id": run_id,
        "plan_dir": str(folder),
        "users": int(summary["users"]),
        "requests": int(summary["requests"]),
        "actions": summary["actions"],
        "unplaced": int(summary["unplaced"]),
        "objective_usd": summary["objective_usd"],
    }


def provision(
    run_id: str,
    now: datetime,
    dry_run: bool = False,
    budget_usd_per_hour: float | None = None,
    settings: Settings | None = None,
) -> dict:
    """Hold warm capacity for the plan's ``preallocate`` rows; outcomes saved beside the plan.

    ``budget_usd_per_hour`` overrides the global cap on warm spend for this run. In a dry run
    nothing is requested and the result says how many rows would have been.
    """
    settings = settings or get_settings()
    if budget_usd_per_hour is not None:
        settings = _with_budget(settings, budget_usd_per_hour)
    folder = plan_dir(run_id, settings)
    plan = pd.read_parquet(folder / PLAN_FILE)
    wanted = int((plan["action"] == "preallocate").sum())
    if dry_run:
        logger.warning("dry run: %d pre-allocation(s) planned, none requested", wanted)
        return {"run_id": run_id, "dry_run": True, "would_request": wanted}
    manager = PreAllocationManager.from_settings(settings)
    try:
        result = manager.request_batch(plan, now)
    finally:
        manager.close()
    _atomic_parquet(result.outcomes, folder / OUTCOMES_FILE)
    counts = result.counts()
    refused = {k: v for k, v in counts.items() if k not in HELD_OUTCOMES and v}
    if refused:
        logger.warning("pre-allocations not held: %s (reasons in %s)", refused, OUTCOMES_FILE)
    return {"run_id": run_id, "dry_run": False, "requested": wanted, "outcomes": counts,
            "keep_rows": result.other_rows}  # fmt: skip


def housekeep(now: datetime, settings: Settings | None = None) -> dict:
    """Warm what is ready, expire holds past their TTL, reconcile ledger and provider."""
    settings = settings or get_settings()
    manager = PreAllocationManager.from_settings(settings)
    try:
        warmed = manager.promote_ready(now)
        expired = manager.expire(now)
        report = manager.reconcile(now)
    finally:
        manager.close()
    return {"warmed": warmed, "expired": expired, "reconcile": report.as_dict()}


def routing_config(run_id: str, now: datetime, settings: Settings | None = None) -> dict:
    """Write the router's config for the window in force at ``now``; returns its path.

    A user gets the plan's region and allocation where the plan asked for a pre-allocation and
    a reservation holds it (or, in a dry run, where it was only planned), and their current
    region with their current allocation otherwise. The version is ``now`` in epoch seconds,
    so a re-run of the same cycle pushes the same config (the router takes it as unchanged).
    """
    settings = settings or get_settings()
    folder = plan_dir(run_id, settings)
    plan = pd.read_parquet(folder / PLAN_FILE)
    outcomes_path = folder / OUTCOMES_FILE
    wanted = plan["action"] == "preallocate"
    if outcomes_path.exists():
        outcomes = pd.read_parquet(outcomes_path)
        held = outcomes[outcomes["outcome"].isin(HELD_OUTCOMES)]
        stamps = pd.to_datetime(held["window_start"], utc=True)
        held_keys = set(zip(held["user_id"], stamps, strict=True))
        starts = pd.to_datetime(plan["window_start"], utc=True)
        held_rows = [key in held_keys for key in zip(plan["user_id"], starts, strict=True)]
        wanted &= pd.Series(held_rows, index=plan.index, dtype=bool)
    routed = plan.assign(region=plan["region"].where(wanted, plan["current_region"]))
    routed["expected_latency_ms"] = routed["expected_latency_ms"].where(wanted)
    stamp = pd.Timestamp(now).tz_convert("UTC")
    config = config_from_plan(routed, version=int(stamp.timestamp()), now=stamp)
    path = folder / "routing_config.json"
    _atomic_text(path, config.model_dump_json(indent=1))
    moved = sum(1 for a in config.users if a.region != a.current_region)
    return {"path": str(path), "version": config.version, "users": len(config.users),
            "preallocated": moved}  # fmt: skip


def push_routing_config(path: str, url: str, token: str) -> dict:
    """Push a written config to the router; a refusal raises with the router's reasons."""
    config = RoutingConfig.model_validate_json(Path(path).read_text())
    answer = push_config(config, url, token)
    return json.loads(answer.model_dump_json())


def router_url(host: str | None, port: int | None, scheme: str | None = None) -> str:
    """The router's base URL from an Airflow connection's parts (host may be a full URL)."""
    host = (host or "").strip().rstrip("/")
    if not host:
        raise ValueError("the router connection has no host")
    if "://" in host:
        return host
    return f"{scheme or 'http'}://{host}" + (f":{port}" if port else "")


def _with_budget(settings: Settings, budget: float) -> Settings:
    provisioning = settings.provisioning.model_copy(update={"budget_usd_per_hour": budget})
    return settings.model_copy(update={"provisioning": provisioning})


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.astype({"plan_row": str}).to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
