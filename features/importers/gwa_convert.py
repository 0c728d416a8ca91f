"""GWA-T-12 measurements (the Parquet form's columns) to the telemetry schema.

Each VM of the trace stands for one user. Assumptions, with their settings (``Settings.gwa``):

- ``user_id`` is ``user_prefix`` + the VM id zero-padded to ``vm_id_digits`` ("gwa-vm-0001");
  ``role`` and ``app`` are "unknown": the trace does not record them.
- ``event_timestamp`` is the sample's time, UTC, kept as it is: irregular steps and repeated
  timestamps of the source stay (resampling belongs to the feature layer).
- A VM is powered on, and so has a session, where its provisioned CPU capacity and its core
  count are both above 0. Powered-off rows (about 11% of the trace) get ``session_active``
  False and 0 for every resource and for ``data_access_count`` (no demand without a session),
  even where the source shows some residual usage there.
- ``cpu_cores`` = CPU usage MHz / (provisioned MHz / provisioned cores): cores busy at the VM's
  own clock rate. It can exceed the provisioned cores where the trace's usage exceeds capacity.
- ``ram_gb`` = memory usage KB x ``kb_bytes`` / 2**30 (GiB).
- ``network_mbps`` = (received + transmitted) KB/s x ``kb_bytes`` x 8 / 1e6.
- ``storage_iops`` is an *estimate*: the trace has disk throughput, not operations, so
  (read + write) KB/s x ``kb_bytes`` / (``io_size_kib`` x 1024) assumes an average I/O size.
- ``data_access_count`` = round(``storage_iops`` x ``interval_seconds``): the I/O operations in
  one nominal 300 s step of the trace, whatever the actual gap to the next sample.
- The trace has no location, client address or latency: ``lat``, ``lon``, ``geo_source``,
  ``client_ip`` and ``latency_ms`` are null; ``serving_region`` is ``serving_region`` (Bitbrains'
  data centres are in Amsterdam).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.schema import conform
from core.settings import Settings, get_settings
from features.importers.gwa_format import (
    RAW_COLUMNS,
    GwaFormatError,
    first_bad_value,
    measurement_problems,
)

# The measurements that become resources; residual values here on powered-off rows are zeroed.
USAGE_COLUMNS: tuple[str, ...] = (
    "cpu_usage_mhz",
    "mem_usage_kb",
    "disk_read_kbps",
    "disk_write_kbps",
    "net_rx_kbps",
    "net_tx_kbps",
)


@dataclass(frozen=True)
class Quirks:
    """Counts of known oddities of the source that the conversion keeps or resolves."""

    powered_off_rows: int  # session_active False, all resources 0
    zeroed_usage_rows: int  # powered off, yet some usage measurement above 0 (set to 0)
    duplicate_timestamps: int  # rows repeating an earlier row's (vm_id, timestamp); kept


def user_id(vm_id: int, settings: Settings | None = None) -> str:
    """The telemetry user id standing for VM ``vm_id``, e.g. "gwa-vm-0001"."""
    gwa = (settings or get_settings()).gwa
    return f"{gwa.user_prefix}{int(vm_id):0{gwa.vm_id_digits}d}"


def powered_on(raw: pd.DataFrame) -> np.ndarray:
    """Rows where the VM is powered on: provisioned CPU capacity and cores both above 0."""
    return (raw["cpu_capacity_mhz"].to_numpy() > 0) & (raw["cpu_cores"].to_numpy() > 0)


def count_quirks(raw: pd.DataFrame) -> Quirks:
    """Count the powered-off rows, those whose residual usage is zeroed, and repeated stamps."""
    off = ~powered_on(raw)
    residual = (raw.loc[:, list(USAGE_COLUMNS)].to_numpy() > 0).any(axis=1)
    repeated = raw.duplicated(["vm_id", "timestamp"]).to_numpy()
    return Quirks(int(off.sum()), int((off & residual).sum()), int(repeated.sum()))


def to_telemetry(raw: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """Convert raw trace rows (:data:`RAW_COLUMNS`) to a schema-conforming telemetry frame.

    One output row per input row, sorted by (``user_id``, ``event_timestamp``), rows with equal
    keys in input order. Raises :class:`GwaFormatError` on a missing column or an impossible
    value (naming the 0-based row), since the readers should have refused those already.
    """
    settings = settings or get_settings()
    _check_raw(raw)
    order, user_ids = _sorted_users(raw, settings)
    raw = raw.iloc[order]
    on = powered_on(raw)
    gwa = settings.gwa
    usage = {name: _measure(raw, name, on) for name in USAGE_COLUMNS}
    mhz_per_core = np.divide(
        _measure(raw, "cpu_capacity_mhz", on),
        _measure(raw, "cpu_cores", on),
        out=np.ones(len(raw)),
        where=on,
    )
    disk_bytes = (usage["disk_read_kbps"] + usage["disk_write_kbps"]) * gwa.kb_bytes
    storage_iops = disk_bytes / (gwa.io_size_kib * 1024)
    rows = len(raw)
    frame = pd.DataFrame(
        {
            "user_id": pd.array(user_ids, dtype="string"),
            "event_timestamp": pd.DatetimeIndex(raw["timestamp"]).tz_convert("UTC"),
            "role": _constant("unknown", rows),
            "app": _constant("unknown", rows),
            "session_active": on,
            "data_access_count": np.rint(storage_iops * gwa.interval_seconds).astype("int64"),
            "lat": np.full(rows, np.nan),
            "lon": np.full(rows, np.nan),
            "geo_source": _constant(pd.NA, rows),
            "client_ip": _constant(pd.NA, rows),
            "serving_region": _constant(gwa.serving_region, rows),
            "latency_ms": np.full(rows, np.nan),
            "cpu_cores": usage["cpu_usage_mhz"] / mhz_per_core,
            "ram_gb": usage["mem_usage_kb"] * gwa.kb_bytes / 2**30,
            "storage_iops": storage_iops,
            "network_mbps": (usage["net_rx_kbps"] + usage["net_tx_kbps"]) * gwa.kb_bytes * 8 / 1e6,
        }
    )
    return conform(frame)


def _check_raw(raw: pd.DataFrame) -> None:
    """Refuse a frame lacking raw columns, with a naive timestamp, or with impossible values."""
    missing = [name for name in RAW_COLUMNS if name not in raw.columns]
    if missing:
        raise GwaFormatError(f"raw trace frame lacks column(s) {', '.join(map(repr, missing))}")
    if not isinstance(raw["timestamp"].dtype, pd.DatetimeTZDtype):
        raise GwaFormatError("raw trace frame: 'timestamp' must be a timezone-aware datetime")
    problems = [*measurement_problems(raw), ("timestamp", raw["timestamp"].isna(), "is missing")]
    bad = first_bad_value(raw, problems)
    if bad is not None:
        raise GwaFormatError(f"raw trace frame: row {bad.position}: {bad.describe()}")


def user_ranks(vm_ids: np.ndarray, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """Each row's position in the sorted list of its users' ids, and that sorted list."""
    inverse, unique_vms = pd.factorize(vm_ids)
    labels = np.array([user_id(vm, settings) for vm in unique_vms], dtype=object)
    by_label = np.argsort(labels, kind="stable")
    rank = np.empty_like(by_label)
    rank[by_label] = np.arange(len(by_label))
    return rank[inverse], labels[by_label]


def _sorted_users(raw: pd.DataFrame, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """A stable row order by (user id, timestamp), and the user id of each row in that order."""
    ranks, labels = user_ranks(raw["vm_id"].to_numpy(), settings)
    order = np.lexsort((pd.DatetimeIndex(raw["timestamp"]).asi8, ranks))
    return order, labels[ranks[order]]


def _measure(raw: pd.DataFrame, column: str, on: np.ndarray) -> np.ndarray:
    """A measurement as float64, 0 where the VM is powered off."""
    return np.where(on, raw[column].to_numpy(dtype="float64"), 0.0)


def _constant(value: object, rows: int) -> pd.Series:
    """A string column holding ``value`` (or null) on every row."""
    return pd.Series(value, index=pd.RangeIndex(rows), dtype="string")
