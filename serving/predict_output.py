"""The predicted profile as tables: built from forecast arrays, and summarised for the online store.

:class:`Prediction` holds the two tables of the "Predicted profile" contract (see
``serving.predictions_store`` for their schemas): ``profiles``, one row per user and forecast
step, and ``region_probs``, the top regions per user and step. Both are sorted by user and step
(regions by falling probability), built column by column from numpy arrays: no per-user loop.
:func:`online_rows` condenses them to one row per user for the ``user_predictions`` view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.schema import RESOURCE_COLUMNS
from features.aggregate import HOUR, TIMESTAMP, USER_KEY
from features.repo.data_sources import CREATED
from features.repo.feature_views import PREDICTION_FEATURES
from serving.predictions_store import PROFILE_SCHEMA, REGION_PROBS_SCHEMA

_UTC = pa.timestamp("ns", tz="UTC")


@dataclass(frozen=True)
class Prediction:
    """``profiles`` and ``region_probs`` of some users (Arrow tables, contract schemas)."""

    profiles: pa.Table
    region_probs: pa.Table

    @classmethod
    def empty(cls) -> Prediction:
        """A prediction for nobody."""
        return cls(PROFILE_SCHEMA.empty_table(), REGION_PROBS_SCHEMA.empty_table())

    @property
    def users(self) -> list[str]:
        """The users with at least one profile row, sorted."""
        return sorted(pc.unique(self.profiles["user_id"]).to_pylist())

    def sources(self) -> dict[str, int]:
        """How many users' profiles came from each source."""
        if not self.profiles.num_rows:
            return {}
        pairs = self.profiles.select(["user_id", "source"]).group_by(["user_id", "source"])
        counts = pairs.aggregate([]).column("source").value_counts().to_pylist()
        return {item["values"]: int(item["counts"]) for item in counts}


def concat(parts: Sequence[Prediction]) -> Prediction:
    """One prediction of several (of disjoint users), re-sorted by user and step."""
    if not parts:
        return Prediction.empty()
    profiles = pa.concat_tables([p.profiles for p in parts])
    regions = pa.concat_tables([p.region_probs for p in parts])
    return Prediction(
        profiles.sort_by([("user_id", "ascending"), ("step", "ascending")]),
        regions.sort_by(
            [("user_id", "ascending"), ("step", "ascending"), ("probability", "descending")]
        ),
    )


def profile_table(
    users: Sequence[str],
    first_target: pd.Timestamp,
    p50: np.ndarray,
    p90: np.ndarray,
    cold_start: np.ndarray,
    model_version: str,
    feature_timestamp: pd.DatetimeIndex,
    source: str,
) -> pa.Table:
    """Profile rows of every user and step from (n, H, resources) quantile arrays.

    Step ``s`` (1-based) targets the hour starting ``first_target + (s - 1) h``; values are
    clipped at 0 (demand is never negative).
    """
    n, horizon = p50.shape[:2]
    rows = n * horizon
    steps = np.tile(np.arange(1, horizon + 1, dtype=np.int64), n)
    target = pd.Timestamp(first_target).value + (steps - 1) * HOUR.value
    columns = [
        _repeat_text(users, horizon),
        pa.array(steps),
        pa.array(target).cast(_UTC),
    ]
    for k in range(len(RESOURCE_COLUMNS)):
        for quantile in (p50, p90):
            columns.append(pa.array(np.maximum(quantile[:, :, k], 0.0).reshape(-1), pa.float64()))
    columns += [
        pa.array(np.repeat(np.asarray(cold_start, dtype=bool), horizon)),
        constant_text(model_version, rows),
        pa.array(np.repeat(feature_timestamp.asi8, horizon)).cast(_UTC),
        constant_text(source, rows),
    ]
    return pa.Table.from_arrays(columns, schema=PROFILE_SCHEMA)


def top_regions(proba: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and probabilities (n, H, k) of the ``k`` likeliest regions, likeliest first.

    ``k`` passes of argmax (ties to the lower index), much faster than sorting for small ``k``.
    """
    k = min(k, proba.shape[-1])
    left = np.array(proba, dtype=np.float32)
    regions = np.empty((*proba.shape[:-1], k), np.int64)
    chances = np.empty((*proba.shape[:-1], k), np.float64)
    for j in range(k):
        best = left.argmax(axis=-1)[..., None]
        regions[..., j : j + 1] = best
        chances[..., j : j + 1] = np.take_along_axis(left, best, axis=-1)
        np.put_along_axis(left, best, -np.inf, axis=-1)
    return regions, chances


def region_table(
    users: Sequence[str],
    regions: np.ndarray,
    probability: np.ndarray,
    codes: Sequence[str],
    keep: np.ndarray | None = None,
) -> pa.Table:
    """Region rows from (n, H, k) catalogue indices and probabilities; ``keep`` masks rows."""
    n, horizon, k = regions.shape
    user = np.repeat(np.arange(n), horizon * k)
    step = np.tile(np.repeat(np.arange(1, horizon + 1, dtype=np.int64), k), n)
    index, chance = regions.reshape(-1), probability.reshape(-1).astype(np.float64)
    if keep is not None:
        mask = np.broadcast_to(keep, regions.shape).reshape(-1)
        user, step, index, chance = user[mask], step[mask], index[mask], chance[mask]
    columns = [
        pa.array(list(users), pa.string()).take(pa.array(user)),
        pa.array(step),
        pa.array(list(codes), pa.string()).take(pa.array(index)),
        pa.array(chance),
    ]
    return pa.Table.from_arrays(columns, schema=REGION_PROBS_SCHEMA)


def online_rows(prediction: Prediction, predicted_at: pd.Timestamp) -> pd.DataFrame:
    """One row per user for the ``user_predictions`` view, stamped ``predicted_at``.

    Per resource: the p50 and p90 of the user's first step ("next") and the highest p90 over
    the steps ("peak"); the likeliest region of the first step and its probability (null where
    the user has no region rows); ``horizon_hours`` is the number of steps the profile covers.
    """
    profiles = prediction.profiles
    if not profiles.num_rows:
        return pd.DataFrame(columns=[USER_KEY, TIMESTAMP, CREATED, *PREDICTION_FEATURES])
    codes, names = _codes(profiles["user_id"])
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    out = pd.DataFrame({USER_KEY: np.asarray(names, dtype=object)[codes[starts]]})
    for resource in RESOURCE_COLUMNS:
        p50 = profiles[f"{resource}_p50"].to_numpy()
        p90 = profiles[f"{resource}_p90"].to_numpy()
        out[f"{resource}_p50_next"] = p50[starts]
        out[f"{resource}_p90_next"] = p90[starts]
        out[f"{resource}_p90_peak"] = np.maximum.reduceat(p90, starts)
    top = _first_region(prediction.region_probs)
    out = out.merge(top, on=USER_KEY, how="left")
    first = profiles.take(pa.array(starts))
    out["cold_start"] = first["cold_start"].to_numpy(zero_copy_only=False)
    out["model_version"] = first["model_version"].to_pylist()
    out["feature_timestamp"] = _iso(first["feature_timestamp"])
    out["prediction_source"] = first["source"].to_pylist()
    out["horizon_hours"] = np.diff(np.r_[starts, len(codes)]).astype(np.int64)
    out[TIMESTAMP] = pd.Timestamp(predicted_at)
    out[CREATED] = pd.Timestamp.now(tz="UTC")
    return out[[USER_KEY, TIMESTAMP, CREATED, *PREDICTION_FEATURES]]


def _first_region(region_probs: pa.Table) -> pd.DataFrame:
    """Each user's likeliest region at their first step (the first row, as the table is sorted)."""
    if not region_probs.num_rows:
        empty = pd.Series([], dtype=object)
        return pd.DataFrame(
            {USER_KEY: empty, "region_next": empty, "region_next_probability": empty.astype(float)}
        )
    codes, names = _codes(region_probs["user_id"])
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    first = region_probs.take(pa.array(starts))
    return pd.DataFrame(
        {
            USER_KEY: np.asarray(names, dtype=object)[codes[starts]],
            "region_next": first["region"].to_pylist(),
            "region_next_probability": first["probability"].to_numpy(),
        }
    )


def _iso(stamps: pa.ChunkedArray) -> np.ndarray:
    """UTC timestamps as ISO 8601 text ("2026-03-01T10:00:00+00:00"); None where null."""
    values = stamps.to_numpy(zero_copy_only=False).astype("datetime64[s]")
    text = np.char.add(np.datetime_as_string(values, unit="s"), "+00:00").astype(object)
    return np.where(np.isnat(values), None, text)


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    encoded = pc.dictionary_encode(column).combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()


def _repeat_text(values: Sequence[str], times: int) -> pa.Array:
    """Each of ``values`` repeated ``times`` times, in order, as a string array."""
    rows = np.repeat(np.arange(len(values)), times)
    return pa.array(list(values), pa.string()).take(pa.array(rows))


def constant_text(value: str, rows: int) -> pa.Array:
    """A string array holding ``value`` ``rows`` times."""
    return pa.array([value], pa.string()).take(pa.array(np.zeros(rows, np.int64)))
