"""Realised error: how the predictions behind the pre-allocations fared, once the truth is known.

Two views of the same predictions, over the last ``settings.feedback.lookback_hours``:

- **Reservations** (the ledger): a pre-allocation was *used* when it became ``active`` (the
  user did move there) and *unused* when it expired or was given back without ever being used
  (wasted warm capacity). The plan row behind each one holds the predicted probability that
  the user would be in that region; the Brier score compares it with what happened.
- **Demand** (the predictions store against the offline ``user_hourly`` table): for each
  (user, hour) now observed, the p50/p90 of the most recent prediction made for it (its
  smallest step) against the hour's mean use, per resource: p90 coverage, pinball losses, and
  the p50's MAE as a ratio to the lag-24 seasonal naive's MAE on the same rows (MASE-like).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.schema import RESOURCE_COLUMNS
from core.settings import Settings
from serving.placement.plan import PLAN_FILE
from serving.predictions_store import RUN_FILE, predictions_dir, read_predictions
from serving.provisioning.ledger import Ledger

HOUR = pd.Timedelta(hours=1)
NAIVE_LAG = pd.Timedelta(hours=24)
PLAN_COLUMNS = ("user_id", "region", "window_start", "location_probability", "action")


def realised_error(settings: Settings, now: datetime) -> dict:
    """Both views of realised error since ``now - lookback``; JSON-able."""
    since = pd.Timestamp(now) - timedelta(hours=settings.feedback.lookback_hours)
    return {
        "now": pd.Timestamp(now).isoformat(),
        "since": since.isoformat(),
        "reservations": reservation_error(reservation_outcomes(settings, since)),
        "demand": demand_error(matched_demand(settings, since, pd.Timestamp(now))),
    }


def reservation_outcomes(settings: Settings, since: pd.Timestamp) -> pd.DataFrame:
    """Reservations resolved since ``since``: used or unused, with their predicted probability."""
    ledger = Ledger.from_settings(settings)
    try:
        held = [r for r in ledger.reservations() if pd.Timestamp(r.updated_at) >= since]
        states: dict[str, set[str]] = {}
        for entry in ledger.journal():
            states.setdefault(entry.reservation_id, set()).add(entry.to_state)
    finally:
        ledger.dispose()
    rows = []
    for r in held:
        passed = states.get(r.reservation_id, set())
        never_used = "active" not in passed
        given_back = "warm" in passed and r.state in ("releasing", "released")
        if not never_used or "expired" in passed or given_back:
            hours = (pd.Timestamp(r.updated_at) - pd.Timestamp(r.created_at)) / HOUR
            rows.append({
                "reservation_id": r.reservation_id, "user_id": r.user_id, "region": r.region,
                "window_start": pd.Timestamp(r.window_start), "used": not never_used,
                "wasted_usd": 0.0 if not never_used else r.warm_usd_per_hour * max(hours, 0.0),
            })  # fmt: skip
    outcomes = pd.DataFrame(
        rows, columns=["reservation_id", "user_id", "region", "window_start", "used", "wasted_usd"]
    )
    return _with_probability(outcomes, settings, since)


def reservation_error(outcomes: pd.DataFrame) -> dict:
    """Counts, unused share, wasted warm spend and the Brier score of the location forecast."""
    resolved = len(outcomes)
    used = int(outcomes["used"].sum()) if resolved else 0
    scored = outcomes.dropna(subset=["probability"]) if resolved else outcomes
    brier = None
    if len(scored):
        brier = float(np.mean((scored["probability"] - scored["used"].astype(float)) ** 2))
    return {
        "resolved": resolved,
        "used": used,
        "unused": resolved - used,
        "unused_share": (resolved - used) / resolved if resolved else None,
        "wasted_warm_usd": float(outcomes["wasted_usd"].sum()) if resolved else 0.0,
        "scored": len(scored),
        "brier": brier,
        "mean_predicted_probability": float(scored["probability"].mean()) if len(scored) else None,
    }


def matched_demand(settings: Settings, since: pd.Timestamp, now: pd.Timestamp) -> pd.DataFrame:
    """(user, hour) rows observed in ``[since, now)``: predicted p50/p90, observed and naive."""
    predicted = _latest_predictions(settings, since)
    observed = _observed_hours(settings, since - NAIVE_LAG)
    if predicted.empty or observed.empty:
        return pd.DataFrame()
    actual = observed[(observed["hour"] >= since) & (observed["hour"] + HOUR <= now)]
    matched = predicted.merge(actual, on=["user_id", "hour"], how="inner")
    naive = observed.assign(hour=observed["hour"] + NAIVE_LAG)
    naive = naive.rename(columns={f"{r}_mean": f"{r}_naive" for r in RESOURCE_COLUMNS})
    return matched.merge(naive, on=["user_id", "hour"], how="left")


def demand_error(matched: pd.DataFrame) -> dict:
    """p90 coverage, pinball losses and the p50-vs-naive MAE ratio per resource, and their mean."""
    per: dict[str, dict] = {}
    for r in RESOURCE_COLUMNS:
        if matched.empty:
            break
        y, p50, p90 = matched[f"{r}_mean"], matched[f"{r}_p50"], matched[f"{r}_p90"]
        with_naive = matched[f"{r}_naive"].notna()
        naive_mae = float((y - matched[f"{r}_naive"])[with_naive].abs().mean())
        p50_mae = float((y - p50)[with_naive].abs().mean())
        per[r] = {
            "coverage_p90": float((y <= p90).mean()),
            "pinball_p50": _pinball(y, p50, 0.5),
            "pinball_p90": _pinball(y, p90, 0.9),
            "mae_p50": float((y - p50).abs().mean()),
            "error_ratio": p50_mae / naive_mae if with_naive.any() and naive_mae > 0 else None,
        }
    return {
        "observed_hours": len(matched),
        "resources": per,
        "coverage_p90": _mean(v["coverage_p90"] for v in per.values()),
        "error_ratio": _mean(v["error_ratio"] for v in per.values()),
    }


def _with_probability(
    outcomes: pd.DataFrame, settings: Settings, since: pd.Timestamp
) -> pd.DataFrame:
    """Attach each reservation's plan probability (user, region, window start), when found."""
    plans = [
        pd.read_parquet(path, columns=list(PLAN_COLUMNS))
        for path in sorted((settings.serving_dir / "plans").glob(f"*/{PLAN_FILE}"))
        if pd.Timestamp(path.stat().st_mtime, unit="s", tz="UTC") >= since - _max_window(settings)
    ]
    if outcomes.empty or not plans:
        return outcomes.assign(probability=np.nan)
    plan = pd.concat(plans, ignore_index=True)
    plan = plan[plan["action"] == "preallocate"]
    plan = plan.assign(window_start=pd.to_datetime(plan["window_start"], utc=True))
    plan = plan.drop_duplicates(["user_id", "region", "window_start"], keep="last")
    plan = plan.rename(columns={"location_probability": "probability"})
    keys = ["user_id", "region", "window_start"]
    stamped = outcomes.assign(window_start=pd.to_datetime(outcomes["window_start"], utc=True))
    return stamped.merge(plan[[*keys, "probability"]], on=keys, how="left")


def _max_window(settings: Settings) -> pd.Timedelta:
    return pd.Timedelta(hours=settings.placement.window_hours + settings.provisioning.ttl_hours)


def _latest_predictions(settings: Settings, since: pd.Timestamp) -> pd.DataFrame:
    """Per (user, target hour ≥ since), the p50/p90 of the prediction with the smallest step."""
    runs = [
        path.parent.name
        for path in sorted((predictions_dir(settings) / "runs").glob(f"*/{RUN_FILE}"))
        if pd.Timestamp(path.stat().st_mtime, unit="s", tz="UTC")
        >= since - pd.Timedelta(hours=settings.lstm.horizon)
    ]
    frames = [read_predictions(run, settings, since=since.to_pydatetime())[0] for run in runs]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    profiles = pd.concat(frames, ignore_index=True)
    profiles["hour"] = pd.to_datetime(profiles["target_hour"], utc=True)
    profiles = profiles.sort_values("step").drop_duplicates(["user_id", "hour"], keep="first")
    wanted = [f"{r}_{q}" for r in RESOURCE_COLUMNS for q in ("p50", "p90")]
    return profiles[["user_id", "hour", *wanted]]


def _observed_hours(settings: Settings, since: pd.Timestamp) -> pd.DataFrame:
    """Hourly mean use per user from the offline store, keyed by the hour's start."""
    from features.repo.data_sources import OFFLINE_FOLDER
    from features.store import repo_path

    path: Path = repo_path(settings) / OFFLINE_FOLDER / "user_hourly.parquet"
    if not path.exists():
        return pd.DataFrame()
    columns = ["user_id", "event_timestamp", *(f"{r}_mean" for r in RESOURCE_COLUMNS)]
    hours = pd.read_parquet(path, columns=columns, filters=[("event_timestamp", ">", since)])
    hours["hour"] = pd.to_datetime(hours.pop("event_timestamp"), utc=True) - HOUR
    return hours


def _pinball(y: pd.Series, q_pred: pd.Series, q: float) -> float:
    diff = y - q_pred
    return float(np.mean(np.maximum(q * diff, (q - 1) * diff)))


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None
