"""The raw GWA-T-12 (Bitbrains) format: its columns, its error type and its value checks.

The archive publishes one CSV file per VM; the shared datasets also hold a "Parquet form" with
the same measurements under short names. Both readers produce frames with the Parquet form's
columns (:data:`RAW_COLUMNS`, plus ``vm_id``), and both refuse physically impossible values
(missing, not finite, negative, fractional core counts) instead of repairing them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

# The archive's CSV header names, mapped to the Parquet form's column names.
CSV_TO_RAW: dict[str, str] = {
    "Timestamp [ms]": "timestamp",  # despite the name: epoch seconds
    "CPU cores": "cpu_cores",
    "CPU capacity provisioned [MHZ]": "cpu_capacity_mhz",
    "CPU usage [MHZ]": "cpu_usage_mhz",
    "CPU usage [%]": "cpu_usage_pct",
    "Memory capacity provisioned [KB]": "mem_capacity_kb",
    "Memory usage [KB]": "mem_usage_kb",
    "Disk read throughput [KB/s]": "disk_read_kbps",
    "Disk write throughput [KB/s]": "disk_write_kbps",
    "Network received throughput [KB/s]": "net_rx_kbps",
    "Network transmitted throughput [KB/s]": "net_tx_kbps",
}
CSV_SEPARATOR = ";"

RAW_COLUMNS: tuple[str, ...] = ("vm_id", *CSV_TO_RAW.values())
MEASUREMENT_COLUMNS: tuple[str, ...] = RAW_COLUMNS[2:]  # all but vm_id and timestamp


class GwaFormatError(ValueError):
    """The input is not a well-formed GWA-T-12 trace; the message names the file and place."""


@dataclass(frozen=True)
class BadValue:
    """The first impossible value found in a frame, and how many there are in all."""

    position: int  # 0-based row position in the checked frame
    column: str
    value: object
    problem: str
    count: int

    def describe(self, label: str | None = None) -> str:
        """A phrase for an error message, e.g. ``column 'x' is negative (-1.0)``.

        ``label`` replaces the column's name, for messages that use the source's own names.
        """
        more = f"; {self.count} impossible values in all" if self.count > 1 else ""
        return f"column {label or self.column!r} {self.problem} ({self.value!r}){more}"


Problem = tuple[str, "pd.Series[bool]", str]


def measurement_problems(raw: pd.DataFrame) -> Iterable[Problem]:
    """Masks of impossible measurements: missing, not finite, negative, fractional core counts.

    ``vm_id`` is checked like a measurement (it must be a non-negative whole number).
    """
    for column in ("vm_id", *MEASUREMENT_COLUMNS):
        if column not in raw.columns:
            continue
        values = raw[column].astype("float64")
        yield column, values.isna(), "is missing (empty or NaN)"
        yield column, np.isinf(values), "is not finite"
        yield column, values < 0, "is negative"
        if column in ("vm_id", "cpu_cores"):
            yield column, values.notna() & (values != np.floor(values)), "is not a whole number"


def first_bad_value(raw: pd.DataFrame, problems: Iterable[Problem]) -> BadValue | None:
    """The earliest row flagged by any of ``problems``, or None when every mask is all False."""
    first: tuple[int, str, str] | None = None
    flagged: dict[str, np.ndarray] = {}  # per column, so a cell with two problems counts once
    for column, mask, problem in problems:
        flags = np.asarray(mask, dtype=bool)
        if not flags.any():
            continue
        flagged[column] = flags | flagged.get(column, False)
        position = int(np.argmax(flags))
        if first is None or position < first[0]:
            first = (position, column, problem)
    if first is None:
        return None
    position, column, problem = first
    count = sum(int(flags.sum()) for flags in flagged.values())
    return BadValue(position, column, _plain(raw[column].iloc[position]), problem, count)


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages read ``-1.0`` not ``np.float64``."""
    return value.item() if isinstance(value, np.generic) else value
