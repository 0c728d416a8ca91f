"""Strict reading of one GWA-T-12 archive CSV file (one VM) into the Parquet form's columns.

The archive's files look like ``1372629804;<TAB>2;<TAB>5851.9989;...``: a header row, then one
row per sample, fields separated by ``;`` and a tab. The VM id is the file's stem (``17.csv`` is
VM 17). ``Timestamp [ms]`` holds epoch *seconds* despite its name.

Parsing is vectorised (numpy for the field counts, pandas' C parser for the numbers) and strict:
a wrong separator, a missing or unknown column, a line with the wrong number of fields (a
truncated last line included), a value that is not a number or is physically impossible each
raise :class:`GwaFormatError` naming the file and the 1-based line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from core.settings import Settings, get_settings
from features.importers.gwa_format import (
    CSV_SEPARATOR,
    CSV_TO_RAW,
    RAW_COLUMNS,
    GwaFormatError,
    Problem,
    first_bad_value,
    measurement_problems,
)

RAW_TO_CSV: dict[str, str] = {raw: name for name, raw in CSV_TO_RAW.items()}
_LIKELY_SEPARATORS = (",", "\t", "|", " ")


def read_gwa_csv(path: Path, settings: Settings | None = None) -> pd.DataFrame:
    """Read one archive CSV into a frame with :data:`RAW_COLUMNS` (``vm_id`` from the file name).

    Numbers keep the precision of the text (float64); ``timestamp`` becomes a UTC datetime.
    Raises :class:`GwaFormatError` on anything that is not a well-formed archive file.
    """
    settings = settings or get_settings()
    path = Path(path)
    vm_id = vm_id_from_path(path)
    data = _read_bytes(path)
    columns = _header_columns(path, data)
    _check_field_counts(path, data, len(columns))
    frame = _parse_numbers(path, data, columns)
    earliest = pd.Timestamp(settings.earliest_event, tz="UTC")
    bad = first_bad_value(
        frame, [*measurement_problems(frame), *_epoch_problems(frame["timestamp"], earliest)]
    )
    if bad is not None:
        label = RAW_TO_CSV[bad.column]
        raise GwaFormatError(f"{path}: line {bad.position + 2}: {bad.describe(label)}")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"].astype("int64"), unit="s", utc=True)
    frame["cpu_cores"] = frame["cpu_cores"].astype("int64")
    frame["vm_id"] = vm_id
    return frame.loc[:, list(RAW_COLUMNS)]


def vm_id_from_path(path: Path) -> int:
    """The VM id an archive file stands for: its stem, a whole number (``17.csv`` -> 17)."""
    stem = Path(path).stem
    if not (stem.isascii() and stem.isdigit()):
        raise GwaFormatError(f"{path}: the file name must be the VM id, as in the archive (1.csv)")
    return int(stem)


def _read_bytes(path: Path) -> bytes:
    """The file's content; an unreadable or empty file is a format error."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise GwaFormatError(f"{path}: cannot be read ({err.strerror or err})") from err
    if not data.strip():
        raise GwaFormatError(f"{path}: line 1: the file is empty (expected a header row)")
    return data


def _header_columns(path: Path, data: bytes) -> list[str]:
    """Parquet-form names of the file's columns, in file order, from its header (line 1)."""
    first_line = data.split(b"\n", 1)[0]
    try:
        header = first_line.decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError as err:
        raise GwaFormatError(f"{path}: line 1: the header is not text") from err
    names = [name.strip() for name in header.split(CSV_SEPARATOR)]
    if len(names) == 1:
        found = [sep for sep in _LIKELY_SEPARATORS if sep in header.strip()]
        hint = f" (it seems to use {found[0]!r})" if found else ""
        raise GwaFormatError(
            f"{path}: line 1: the header is not separated by {CSV_SEPARATOR!r}{hint}"
        )
    missing = [name for name in CSV_TO_RAW if name not in names]
    unknown = [name for name in names if name not in CSV_TO_RAW]
    repeated = sorted({name for name in names if names.count(name) > 1})
    for problem, which in (("lacks", missing), ("has unknown", unknown), ("repeats", repeated)):
        if which:
            listed = ", ".join(map(repr, which))
            raise GwaFormatError(f"{path}: line 1: the header {problem} column(s) {listed}")
    return [CSV_TO_RAW[name] for name in names]


def _check_field_counts(path: Path, data: bytes, expected: int) -> None:
    """Raise on the first line (after the header) without exactly ``expected`` fields."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buffer == ord("\n"))
    ends_with_newline = data.endswith(b"\n")
    ends = newlines if ends_with_newline else np.append(newlines, len(buffer))
    starts = np.concatenate(([0], newlines + 1))[: len(ends)]
    separators = np.flatnonzero(buffer == ord(CSV_SEPARATOR))
    fields = np.searchsorted(separators, ends) - np.searchsorted(separators, starts) + 1
    content = ends - starts - (buffer[np.maximum(ends - 1, 0)] == ord("\r"))
    bad = np.flatnonzero((fields != expected) | (content <= 0))
    bad = bad[bad > 0]  # line 1, the header, is checked by _header_columns
    if len(bad) == 0:
        return
    index = int(bad[0])
    line = index + 1
    if content[index] <= 0:
        raise GwaFormatError(f"{path}: line {line}: blank line")
    if index == len(ends) - 1 and not ends_with_newline and fields[index] < expected:
        raise GwaFormatError(
            f"{path}: line {line}: {fields[index]} of {expected} fields and no line end: "
            "the file ends mid-row (truncated?)"
        )
    raise GwaFormatError(f"{path}: line {line}: {fields[index]} fields, expected {expected}")


def _parse_numbers(path: Path, data: bytes, columns: list[str]) -> pd.DataFrame:
    """Parse the rows (field counts already checked) into float/int columns, strictly numeric."""
    frame = pd.read_csv(
        io.BytesIO(data),
        sep=CSV_SEPARATOR,
        header=None,
        skiprows=1,
        names=columns,
        engine="c",
        skip_blank_lines=False,
        quoting=csv.QUOTE_NONE,
        low_memory=False,
    )
    for column in columns:
        if pd.api.types.is_numeric_dtype(frame[column]):
            continue
        text = frame[column].astype("string").str.strip().replace("", pd.NA)
        numbers = pd.to_numeric(text, errors="coerce")
        not_numbers = (numbers.isna() & text.notna()).to_numpy(dtype=bool)
        if not_numbers.any():
            position = int(np.argmax(not_numbers))
            raise GwaFormatError(
                f"{path}: line {position + 2}: column {RAW_TO_CSV[column]!r} is not a number "
                f"({text.iloc[position]!r})"
            )
        frame[column] = numbers
    return frame


def _epoch_problems(seconds: pd.Series, earliest: pd.Timestamp) -> Iterable[Problem]:
    """Masks of impossible epoch seconds: missing, fractional, too old, or beyond pandas' range."""
    values = seconds.astype("float64")
    latest = pd.Timestamp.max.tz_localize("UTC")
    yield "timestamp", values.isna(), "is missing (empty or NaN)"
    yield "timestamp", values.notna() & (values != np.floor(values)), "is not whole epoch seconds"
    too_old = f"is before {earliest:%Y-%m-%d} (not epoch seconds?)"
    yield "timestamp", values < earliest.timestamp(), too_old
    yield "timestamp", values > latest.timestamp() - 1, "is too large for epoch seconds"
