"""Reading the pre-allocation rows of a placement plan, each checked on its own.

A bad row never sinks the batch and is never dropped: it comes back with the reason it was
refused, so the manager can report it beside the rows it did act on.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from core.regions import RegionCatalogue
from serving.provisioning.provider import ResourceSpec

REQUIRED_COLUMNS: tuple[str, ...] = (
    "user_id",
    "window_start",
    "window_end",
    "region",
    "cpu_cores",
    "ram_gb",
    "storage_iops",
    "network_mbps",
    "action",
)
PREALLOCATE = "preallocate"


@dataclass(frozen=True)
class PreallocationRow:
    """One plan row asking for warm capacity for a user in a region over a window."""

    user_id: str
    region: str
    window_start: datetime
    window_end: datetime
    spec: ResourceSpec


@dataclass(frozen=True)
class RefusedRow:
    """A pre-allocation row that cannot be acted on, and why."""

    user_id: Any
    region: Any
    window_start: Any
    reason: str


def preallocation_rows(
    plan: pd.DataFrame, catalogue: RegionCatalogue, now: datetime
) -> Iterator[tuple[Hashable, PreallocationRow | RefusedRow]]:
    """Every ``action == "preallocate"`` row of ``plan`` (by index label), parsed or refused.

    Raises ValueError when the plan lacks a required column: then no row can be read.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in plan.columns]
    if missing:
        raise ValueError(f"the plan lacks column(s) {missing}; it needs {list(REQUIRED_COLUMNS)}")
    for label, row in plan[plan["action"] == PREALLOCATE].iterrows():
        yield label, _parse(row, catalogue, now)


def count_other_actions(plan: pd.DataFrame) -> int:
    """Rows of the plan that ask for no pre-allocation (``keep``)."""
    return int((plan["action"] != PREALLOCATE).sum())


def _parse(
    row: pd.Series, catalogue: RegionCatalogue, now: datetime
) -> PreallocationRow | RefusedRow:
    def refuse(reason: str) -> RefusedRow:
        return RefusedRow(row["user_id"], row["region"], row["window_start"], reason)

    user_id, region = row["user_id"], row["region"]
    if not isinstance(user_id, str) or not user_id:
        return refuse(f"user_id must be a non-empty string, got {user_id!r}")
    if region not in catalogue.codes:
        return refuse(f"region {region!r} is not in the region catalogue")
    start, end = _utc(row["window_start"]), _utc(row["window_end"])
    if start is None or end is None:
        return refuse(
            f"window_start/window_end must be timezone-aware timestamps, got "
            f"{row['window_start']!r} / {row['window_end']!r}"
        )
    if end <= start:
        return refuse(f"window_end {end.isoformat()} is not after window_start {start.isoformat()}")
    if end <= now:
        return refuse(f"the window ended at {end.isoformat()}, before now ({now.isoformat()})")
    amounts = {}
    for column in ("cpu_cores", "ram_gb", "storage_iops", "network_mbps"):
        value = row[column]
        is_number = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
        if not is_number or not math.isfinite(value) or value < 0:
            return refuse(f"{column} must be a finite number >= 0, got {value!r}")
        amounts[column] = float(value)
    return PreallocationRow(user_id, region, start, end, ResourceSpec(**amounts))


def _utc(value: Any) -> datetime | None:
    """A timezone-aware timestamp as a UTC datetime; None for anything else (naive, NaT, text)."""
    if not isinstance(value, pd.Timestamp | datetime) or pd.isna(value) or value.tzinfo is None:
        return None
    return pd.Timestamp(value).tz_convert("UTC").to_pydatetime()
