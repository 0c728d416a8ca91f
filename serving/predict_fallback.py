"""Fallback profiles, used when the model cannot be trusted (missing, stale, or unloadable) or
the features are stale: the last good predictions while they are young enough, or else a
*reactive* profile from what the user did recently.

A reactive profile is flat over the horizon: per resource, the median of the user's hourly
means over the last ``predict.reactive_hours`` hours as the p50 and their
``predict.reactive_quantile`` (0.95) as the p90 (deliberately cautious: it sizes warm
capacity), and the user's last known region with
probability 1. Users without an observation in those hours fall back to their whole window.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from core.settings import Settings
from serving.predict_features import ShardFeatures
from serving.predict_output import Prediction, constant_text, profile_table, region_table
from serving.predictions_store import read_prediction_tables

NO_MODEL = "none"


def is_fresh(pointer: dict | None, now: pd.Timestamp, settings: Settings) -> bool:
    """Whether the last good predictions (``pointer``) may stand in at ``now``: made before
    ``now`` (a backfill never borrows from its future) and at most the allowed age."""
    if pointer is None:
        return False
    age = now - pd.Timestamp(pointer["predicted_at"])
    limit = pd.Timedelta(hours=settings.predict.max_prediction_age_hours)
    return pd.Timedelta(0) <= age <= limit


def last_good_users(run_id: str, settings: Settings) -> list[str]:
    """The users the finalised run ``run_id`` holds profiles for."""
    profiles, _ = read_prediction_tables(run_id, settings)
    return pc.unique(profiles["user_id"]).to_pylist()


def last_good(
    run_id: str, first_user: str, last_user: str, now: pd.Timestamp, settings: Settings
) -> Prediction:
    """The last good run's rows for the users of a shard whose target hour has not passed."""
    profiles, regions = read_prediction_tables(
        run_id, settings, first_user, last_user, since=now.floor("h")
    )
    source = profiles.schema.get_field_index("source")
    relabelled = profiles.set_column(
        source, "source", constant_text("last_good", profiles.num_rows)
    )
    return Prediction(relabelled, regions)


def reactive(
    features: ShardFeatures,
    first_target: pd.Timestamp,
    horizon: int,
    settings: Settings,
    region_codes: tuple[str, ...],
    users: list[str] | None = None,
) -> Prediction:
    """Reactive profiles (module docstring) of the shard's users, or only of ``users``."""
    panel = features.panel
    if panel is None:
        return Prediction.empty()
    rows = np.arange(panel.n_series)
    if users is not None:
        rows = np.flatnonzero(pd.Index(panel.series_ids).isin(users))
    ids = [panel.series_ids[i] for i in rows]
    values = panel.values[rows]
    recent = values[:, -settings.predict.reactive_hours :]
    level = settings.predict.reactive_quantile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are handled below
        p50 = _nan_fill(np.nanmedian(recent, axis=1), np.nanmedian(values, axis=1))
        p90 = _nan_fill(
            np.nanquantile(recent, level, axis=1), np.nanquantile(values, level, axis=1)
        )
    observed = ~np.isnan(values).all(axis=2)
    first = np.where(observed.any(axis=1), observed.argmax(axis=1), panel.n_hours)
    cold = (panel.n_hours - first) < settings.lstm.encoder_length
    profiles = profile_table(
        ids,
        first_target,
        np.repeat(p50[:, None, :], horizon, axis=1),
        np.repeat(np.maximum(p90, p50)[:, None, :], horizon, axis=1),
        cold,
        NO_MODEL,
        features.newest[rows],
        "reactive",
    )
    regions = _last_region(panel.region[rows] if panel.region is not None else None, len(rows))
    known = regions >= 0
    region_rows = region_table(
        ids,
        np.broadcast_to(np.clip(regions, 0, None)[:, None, None], (len(rows), horizon, 1)),
        np.ones((len(rows), horizon, 1)),
        region_codes,
        keep=np.broadcast_to(known[:, None, None], (len(rows), horizon, 1)),
    )
    return Prediction(profiles, region_rows)


def _nan_fill(values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """``values`` with NaN replaced by ``fallback``, then by 0 (no data at all)."""
    return np.nan_to_num(np.where(np.isnan(values), fallback, values), nan=0.0)


def _last_region(region: np.ndarray | None, n: int) -> np.ndarray:
    """Each series' last known region index (-1 when none is known)."""
    if region is None:
        return np.full(n, -1, np.int64)
    known = region >= 0
    last = region.shape[1] - 1 - np.argmax(known[:, ::-1], axis=1)
    picked = region[np.arange(n), last].astype(np.int64)
    return np.where(known.any(axis=1), picked, -1)
