"""Drift: is the realised error of the predictions beyond what ``settings.feedback`` tolerates?

Three tests, each only once enough has been observed to mean something:

- p90 coverage of observed hours below ``min_coverage_p90`` (under-prediction: the capacity
  held is too small too often);
- the p50's MAE above ``max_error_ratio`` times the lag-24 seasonal naive's (the model is no
  better than repeating yesterday);
- the share of resolved pre-allocations left unused above ``max_unused_share`` (the location
  forecast sends warm capacity where users do not go).

Every decision, drift or not, is recorded with its figures and thresholds as JSON under
``serving/feedback/drift/``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.settings import Settings
from serving.feedback import drift_dir


def decide_drift(errors: dict, settings: Settings, overrides: dict | None = None) -> dict:
    """The drift decision on ``realised_error``'s figures; ``overrides`` replace thresholds.

    Returns ``{"drift": bool, "reasons": [...], "checks": {...}, "thresholds": {...}}``; a
    check without enough observations is reported as ``"insufficient"`` and never drifts.
    """
    limits = settings.feedback.model_copy(
        update={k: v for k, v in (overrides or {}).items() if v is not None}
    )
    demand, held = errors["demand"], errors["reservations"]
    enough_hours = demand["observed_hours"] >= limits.min_observed_hours
    enough_held = held["resolved"] >= limits.min_resolved_reservations
    checks = {
        "coverage_p90": _check(
            demand["coverage_p90"], enough_hours, lambda v: v < limits.min_coverage_p90,
            f"p90 coverage {{v:.3f}} < floor {limits.min_coverage_p90}",
        ),
        "error_ratio": _check(
            demand["error_ratio"], enough_hours, lambda v: v > limits.max_error_ratio,
            f"p50 MAE / naive MAE {{v:.3f}} > ceiling {limits.max_error_ratio}",
        ),
        "unused_share": _check(
            held["unused_share"], enough_held, lambda v: v > limits.max_unused_share,
            f"unused pre-allocation share {{v:.3f}} > ceiling {limits.max_unused_share}",
        ),
    }  # fmt: skip
    reasons = [c["reason"] for c in checks.values() if c["status"] == "drift"]
    return {
        "drift": bool(reasons),
        "reasons": reasons,
        "checks": checks,
        "thresholds": limits.model_dump(),
    }


def record_drift_decision(
    decision: dict, errors: dict, settings: Settings, now: datetime, run_id: str | None = None
) -> Path:
    """Write the decision with its figures as ``drift/<now>.json`` (rewritten on a re-run)."""
    stamp = pd.Timestamp(now).tz_convert("UTC").strftime("%Y%m%dT%H%M%S%fZ")
    path = drift_dir(settings) / f"{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"at": pd.Timestamp(now).isoformat(), "run_id": run_id, **decision, "errors": errors}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)
    return path


def _check(value: float | None, enough: bool, beyond, message: str) -> dict:
    if value is None or not enough:
        return {"status": "insufficient", "value": value, "reason": None}
    if beyond(value):
        return {"status": "drift", "value": value, "reason": message.format(v=value)}
    return {"status": "ok", "value": value, "reason": None}
