"""The predictions store: where batch prediction keeps its profiles, and how they are read back.

Layout under ``settings.serving_dir / "predictions"``::

    runs/<run>/plan.json                      the shards planned for the run (plan_shards)
    runs/<run>/shard=00000/profiles.parquet   the "Predicted profile" contract: profiles ...
    runs/<run>/shard=00000/region_probs.parquet                              ... and regions
    runs/<run>/shard=00000/pushed.parquet     the one-row-per-user summary pushed online
    runs/<run>/shard=00000/shard.json         the shard's manifest, written last: its key
    runs/<run>/run.json                       the finalised run, written once every shard is in
    latest_good.json                          the pointer to the latest good (model) run

Every file is written under a temporary name and renamed into place, so a reader never sees a
half-written file, and a shard without its manifest is simply not done: re-running it replaces
whatever a killed attempt left.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from core.schema import RESOURCE_COLUMNS
from core.settings import Settings, get_settings

PROFILES_FILE = "profiles.parquet"
REGION_PROBS_FILE = "region_probs.parquet"
PUSHED_FILE = "pushed.parquet"
SHARD_MANIFEST = "shard.json"
PLAN_FILE = "plan.json"
RUN_FILE = "run.json"
LATEST_GOOD_FILE = "latest_good.json"
TMP_SUFFIX = ".tmp"

SOURCES: tuple[str, ...] = ("model", "last_good", "reactive")
_UTC = pa.timestamp("ns", tz="UTC")
PROFILE_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("step", pa.int64()),
        pa.field("target_hour", _UTC),
        *(pa.field(f"{r}_{q}", pa.float64()) for r in RESOURCE_COLUMNS for q in ("p50", "p90")),
        pa.field("cold_start", pa.bool_()),
        pa.field("model_version", pa.string()),
        pa.field("feature_timestamp", _UTC),
        pa.field("source", pa.string()),
    ]
)
REGION_PROBS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("step", pa.int64()),
        pa.field("region", pa.string()),
        pa.field("probability", pa.float64()),
    ]
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=:-]")


class PredictionsNotFoundError(LookupError):
    """The predictions asked for do not exist (no such finalised run, or no good run yet)."""


def predictions_dir(settings: Settings | None = None) -> Path:
    """Root of the predictions store: ``$PREWARM_HOME/serving/predictions``."""
    return (settings or get_settings()).serving_dir / "predictions"


def run_dir(run_id: str, settings: Settings | None = None) -> Path:
    """Folder of one prediction run; the run id is made safe as a folder name."""
    if not run_id or not run_id.strip():
        raise ValueError("a prediction run needs a non-empty run_id")
    return predictions_dir(settings) / "runs" / _UNSAFE.sub("_", run_id)


def shard_dir(run_id: str, shard: int, settings: Settings | None = None) -> Path:
    """Folder of one shard of a run."""
    return run_dir(run_id, settings) / f"shard={shard:05d}"


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON, atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None when there is none."""
    return json.loads(path.read_text()) if path.exists() else None


def write_table(table: pa.Table, path: Path) -> Path:
    """Write ``table`` as one Parquet file, atomically (temporary name, then rename).

    Only text columns are dictionary-encoded: forecasts rarely repeat, and encoding them
    doubled the write time for a larger file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    text = [f.name for f in table.schema if pa.types.is_string(f.type)]
    pq.write_table(table, tmp, use_dictionary=text)
    os.replace(tmp, path)
    return path


def clear_partial(folder: Path) -> None:
    """Remove temporary files a killed writer left in ``folder``."""
    if folder.is_dir():
        for leftover in folder.glob(f"*{TMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def read_latest_good(settings: Settings | None = None) -> dict[str, Any] | None:
    """The pointer to the latest good run (its run id, times, model version), or None."""
    return read_json(predictions_dir(settings) / LATEST_GOOD_FILE)


def move_latest_good(record: dict[str, Any], settings: Settings | None = None) -> bool:
    """Point ``latest_good`` at ``record``'s run unless it points at a later run already.

    "Later" compares ``predicted_at``, so a backfill finishing after today's run never moves
    the pointer back in time. Returns whether the pointer now points at ``record``'s run.
    """
    current = read_latest_good(settings)
    later = current is not None and current["run_id"] != record["run_id"]
    if later and pd.Timestamp(current["predicted_at"]) > pd.Timestamp(record["predicted_at"]):
        return False
    write_json(predictions_dir(settings) / LATEST_GOOD_FILE, record)
    return True


def read_predictions(
    run_id: str | None = None,
    settings: Settings | None = None,
    first_user: str | None = None,
    last_user: str | None = None,
    since: datetime | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``profiles`` and ``region_probs`` of a finalised run (default: the latest good run).

    ``first_user``/``last_user`` (inclusive) and ``since`` (first target hour kept; the region
    rows follow the profile rows kept) narrow what is read. Raises PredictionsNotFoundError
    when the run is not finalised, or no good run exists yet.
    """
    profiles, regions = read_prediction_tables(run_id, settings, first_user, last_user, since)
    return _frame(profiles), _frame(regions)


def read_prediction_tables(
    run_id: str | None = None,
    settings: Settings | None = None,
    first_user: str | None = None,
    last_user: str | None = None,
    since: datetime | None = None,
) -> tuple[pa.Table, pa.Table]:
    """The Arrow tables behind :func:`read_predictions` (same arguments, same order)."""
    folder = _finalised_run(run_id, settings)
    users = None
    if first_user is not None:
        users = ds.field("user_id") >= first_user
    if last_user is not None:
        below = ds.field("user_id") <= last_user
        users = below if users is None else users & below
    wanted = users
    if since is not None:
        first = pd.Timestamp(since)
        first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
        later = ds.field("target_hour") >= first
        wanted = later if wanted is None else wanted & later
    profiles = _read(folder, PROFILES_FILE, PROFILE_SCHEMA, wanted)
    regions = _read(folder, REGION_PROBS_FILE, REGION_PROBS_SCHEMA, users)
    if since is not None:
        kept = pa.table({"user_id": profiles["user_id"], "step": profiles["step"]})
        regions = regions.join(kept, ["user_id", "step"], join_type="inner")
        regions = regions.select(REGION_PROBS_SCHEMA.names)
    return _sorted(profiles, ["user_id", "step"]), _sorted(
        regions, ["user_id", "step", ("probability", "descending")]
    )


def _finalised_run(run_id: str | None, settings: Settings | None) -> Path:
    if run_id is None:
        pointer = read_latest_good(settings)
        if pointer is None:
            raise PredictionsNotFoundError("no good prediction run has been finalised yet")
        run_id = pointer["run_id"]
    folder = run_dir(run_id, settings)
    if not (folder / RUN_FILE).exists():
        raise PredictionsNotFoundError(f"prediction run {run_id!r} is not finalised ({folder})")
    return folder


def _read(folder: Path, name: str, schema: pa.Schema, condition: ds.Expression | None) -> pa.Table:
    files = sorted(str(path) for path in folder.glob(f"shard=*/{name}"))
    if not files:
        return schema.empty_table()
    return ds.dataset(files, schema=schema, format="parquet").to_table(filter=condition)


def _sorted(table: pa.Table, keys: list) -> pa.Table:
    order = [(k, "ascending") if isinstance(k, str) else k for k in keys]
    return table.sort_by(order)


def _frame(table: pa.Table) -> pd.DataFrame:
    """A DataFrame with plain ``str`` text columns (object dtype), as the contract reads."""
    frame = table.to_pandas()
    for column in frame.columns:
        if pa.types.is_string(table.schema.field(column).type):
            frame[column] = frame[column].astype(object)
    return frame
