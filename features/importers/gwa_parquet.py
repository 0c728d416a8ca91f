"""Reading the Parquet form of the GWA-T-12 trace (``../shared/datasets/bitbrains-rnd``).

The Parquet form holds many VMs in one file, with the columns :data:`RAW_COLUMNS`: ``vm_id``,
``timestamp`` (a timezone-aware datetime) and the measurements under short names. An unreadable
file, a missing column, a wrong column type or a physically impossible value each raise
:class:`GwaFormatError` naming the file (and, for values, the 0-based row).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.settings import Settings, get_settings
from features.importers.gwa_format import (
    RAW_COLUMNS,
    GwaFormatError,
    Problem,
    first_bad_value,
    measurement_problems,
)


def read_gwa_parquet(path: Path, settings: Settings | None = None) -> pd.DataFrame:
    """Read one Parquet-form file into a frame with exactly :data:`RAW_COLUMNS`, checked.

    Column types are kept as stored (the shared file uses int16 and float32); ``timestamp`` is
    converted to UTC.
    """
    settings = settings or get_settings()
    path = Path(path)
    _check_schema(path, _read_schema(path))
    try:
        frame = pq.read_table(path, columns=list(RAW_COLUMNS)).to_pandas()
    except (OSError, pa.ArrowException) as err:
        raise GwaFormatError(f"{path}: unreadable Parquet ({err})") from err
    frame["timestamp"] = frame["timestamp"].dt.tz_convert("UTC")
    earliest = pd.Timestamp(settings.earliest_event, tz="UTC")
    problems = [*measurement_problems(frame), *_timestamp_problems(frame["timestamp"], earliest)]
    bad = first_bad_value(frame, problems)
    if bad is not None:
        row = frame.iloc[bad.position]
        raise GwaFormatError(
            f"{path}: row {bad.position} (vm_id {row['vm_id']}, {row['timestamp']}): "
            f"{bad.describe()}"
        )
    return frame


def _read_schema(path: Path) -> pa.Schema:
    """The file's Arrow schema; anything that is not a readable Parquet file is a format error."""
    try:
        return pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise GwaFormatError(f"{path}: unreadable Parquet ({err})") from err


def _check_schema(path: Path, schema: pa.Schema) -> None:
    """Every raw column present, numbers numeric, ``timestamp`` a timezone-aware datetime."""
    missing = [name for name in RAW_COLUMNS if name not in schema.names]
    if missing:
        listed = ", ".join(map(repr, missing))
        raise GwaFormatError(f"{path}: missing column(s) {listed}")
    for name in RAW_COLUMNS:
        kind = schema.field(name).type
        if name == "timestamp":
            ok = pa.types.is_timestamp(kind) and kind.tz is not None
            expected = "a timezone-aware timestamp"
        else:
            ok = pa.types.is_integer(kind) or pa.types.is_floating(kind)
            expected = "a number"
        if not ok:
            raise GwaFormatError(f"{path}: column {name!r} has type {kind}, expected {expected}")


def _timestamp_problems(stamps: pd.Series, earliest: pd.Timestamp) -> Iterable[Problem]:
    """Masks of impossible timestamps: missing, or before ``earliest``."""
    yield "timestamp", stamps.isna(), "is missing"
    yield "timestamp", stamps < earliest, f"is before {earliest:%Y-%m-%d}"
