"""Ingest router feedback batches: validate, write the ``router_feedback`` features, file away.

For each batch folder (see ``serving.feedback``):

1. read its measurements; a batch that cannot be read or lacks columns is moved whole to
   ``rejected/`` with the reason (nothing of it enters the store);
2. check every row; rejected rows go to ``quarantine/<batch>.parquet`` with a ``reasons``
   column, and ``rows_in == rows_valid + rows_quarantined`` always;
3. one feature row per user from the valid rows (:func:`feature_rows`), upserted into the
   offline ``router_feedback`` table and pushed to the online store;
4. the report is written into the batch, and the batch renamed into ``done/``.

Re-running a batch is harmless: the offline write is an upsert on (user, ``event_timestamp``),
the online push overwrites, the quarantine file is rewritten, and a batch already in ``done/``
returns its recorded report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.regions import load_regions
from core.settings import Settings
from serving.feedback import (
    MEASUREMENTS_FILE,
    REPORT_FILE,
    SWITCHOVERS_FILE,
    done_dir,
    quarantine_dir,
    rejected_dir,
)
from serving.feedback_export import MEASUREMENT_SCHEMA
from serving.router.models import USER_ID_PATTERN

REQUIRED_COLUMNS: tuple[str, ...] = tuple(MEASUREMENT_SCHEMA.names)
FEATURE_COLUMNS: tuple[str, ...] = (
    "user_id",
    "event_timestamp",
    "feedback_latency_ms",
    "feedback_slo_violation_share",
    "feedback_migrations",
)
_USER_ID = re.compile(USER_ID_PATTERN)


def validate_measurements(
    rows: pd.DataFrame, settings: Settings, now: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split measurement rows into valid ones and rejected ones (with a ``reasons`` column)."""
    regions = {region.code for region in load_regions(settings.regions_file)}
    latest = pd.Timestamp(now) + timedelta(minutes=settings.validation.future_tolerance_minutes)
    last_at = pd.to_datetime(rows["last_at"], utc=True)
    latency = pd.to_numeric(rows["latency_ms"], errors="coerce")
    throughput = pd.to_numeric(rows["throughput_mbps"], errors="coerce")
    cpu = pd.to_numeric(rows["cpu_utilisation"], errors="coerce")
    checks: dict[str, pd.Series] = {
        "user_id is missing or malformed": ~rows["user_id"].map(_good_user_id).astype(bool),
        "region is not in the catalogue": ~rows["region"].isin(regions),
        "latency_ms is missing, negative or implausible": ~(
            latency.between(0, settings.validation.max_latency_ms)
        ),
        "samples is below 1": ~(pd.to_numeric(rows["samples"], errors="coerce") >= 1),
        "throughput_mbps is negative or not finite": throughput.notna()
        & ~(np.isfinite(throughput) & (throughput >= 0)),
        "cpu_utilisation is outside [0, 1]": cpu.notna() & ~cpu.between(0, 1),
        "last_at is missing or in the future": last_at.isna() | (last_at > latest),
        "switches is negative or missing": ~(pd.to_numeric(rows["switches"], errors="coerce") >= 0),
        "duplicate (user_id, region) in the batch": rows.duplicated(["user_id", "region"]),
    }
    failed = pd.DataFrame(checks, index=rows.index)
    bad = failed.any(axis=1)
    reasons = failed[bad].apply(lambda row: "; ".join(failed.columns[row.to_numpy()]), axis=1)
    quarantined = rows[bad].assign(reasons=reasons.astype(str) if len(reasons) else "")
    return rows[~bad].copy(), quarantined


def feature_rows(valid: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """One ``router_feedback`` row per user measured at their serving region.

    ``event_timestamp``: the user's latest measurement in the batch. ``feedback_latency_ms``:
    the smoothed latency at the serving region; ``feedback_slo_violation_share``: whether it
    exceeds the SLO at that moment (0 or 1; over a window, the mean of the user's rows);
    ``feedback_migrations``: the user's switchovers so far. A user not measured at the region
    serving them gets no row (nothing to say about their experience).
    """
    if valid.empty:
        return pd.DataFrame(columns=list(FEATURE_COLUMNS))
    stamped = valid.assign(last_at=pd.to_datetime(valid["last_at"], utc=True))
    latest = stamped.groupby("user_id")["last_at"].max().rename("event_timestamp")
    serving = stamped[stamped["region"] == stamped["serving_region"]].set_index("user_id")
    out = serving.join(latest, how="inner")
    return pd.DataFrame(
        {
            "user_id": out.index.astype(str),
            "event_timestamp": out["event_timestamp"].to_numpy(),
            "feedback_latency_ms": out["latency_ms"].astype(float).to_numpy(),
            "feedback_slo_violation_share": (out["latency_ms"] > settings.latency_slo_ms)
            .astype(float)
            .to_numpy(),
            "feedback_migrations": out["switches"].astype("int64").to_numpy(),
        }
    ).reset_index(drop=True)


def ingest_feedback_batches(paths: list[str], settings: Settings, now: datetime) -> dict:
    """Ingest each batch in order (one feature store for all); returns the summed report."""
    from features.store import apply_definitions, feature_store

    store = feature_store(settings)
    apply_definitions(store)
    reports = [ingest_feedback_batch(Path(p), settings, now, store) for p in paths]
    totals = {
        key: sum(r.get(key, 0) for r in reports)
        for key in ("rows_in", "rows_valid", "rows_quarantined", "users_written", "switchovers")
    }
    return {**totals, "batches": len(reports), "rejected": [r for r in reports if r["rejected"]]}


def ingest_feedback_batch(path: Path, settings: Settings, now: datetime, store: Any) -> dict:
    """Validate one batch, write its features offline and online, move it to ``done/``."""
    if not path.exists():  # a re-run after the batch was filed away: its recorded report
        for filed in (done_dir(settings) / path.name, rejected_dir(settings) / path.name):
            if (filed / REPORT_FILE).exists():
                return json.loads((filed / REPORT_FILE).read_text())
        raise FileNotFoundError(f"feedback batch {path} is neither waiting nor filed away")
    try:
        rows = pd.read_parquet(path / MEASUREMENTS_FILE)
        switchovers = pd.read_parquet(path / SWITCHOVERS_FILE)
        missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
        if missing:
            raise ValueError(f"measurements lack columns {missing}")
    except (OSError, ValueError) as exc:
        report = {"batch": path.name, "rejected": True, "reason": str(exc)}
        return _file_away(path, rejected_dir(settings), report)
    valid, quarantined = validate_measurements(rows, settings, now)
    _write_quarantine(quarantined, quarantine_dir(settings) / f"{path.name}.parquet")
    features = feature_rows(valid, settings)
    if len(features):
        _write_features(features, settings, store)
    report = {
        "batch": path.name,
        "rejected": False,
        "rows_in": len(rows),
        "rows_valid": len(valid),
        "rows_quarantined": len(quarantined),
        "users_written": len(features),
        "switchovers": len(switchovers),
        "switchovers_failed": int((switchovers.get("status") == "failed").sum()),
    }
    return _file_away(path, done_dir(settings), report)


def _good_user_id(value: Any) -> bool:
    return isinstance(value, str) and _USER_ID.fullmatch(value) is not None


def _write_features(features: pd.DataFrame, settings: Settings, store: Any) -> None:
    """Upsert offline (idempotent), then push online only (the offline copy is already there)."""
    from feast.data_source import PushMode

    from features.repo.data_sources import CREATED, router_feedback_push
    from features.store import write_offline

    write_offline({"router_feedback": features}, settings)
    online = features.assign(**{CREATED: pd.Timestamp.now(tz="UTC")})
    store.push(router_feedback_push.name, online, to=PushMode.ONLINE)


def _write_quarantine(rows: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if rows.empty:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    rows.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _file_away(path: Path, target_dir: Path, report: dict) -> dict:
    """Write the report into the batch, then move the batch into ``target_dir``."""
    (path / REPORT_FILE).write_text(json.dumps(report, indent=1))
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    if target.exists():  # a previous attempt moved a copy there before being killed
        shutil.rmtree(target)
    os.replace(path, target)
    return report
