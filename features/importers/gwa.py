"""Import the GWA-T-12 (Bitbrains) trace into a telemetry dataset (``prewarm import-gwa``).

Two inputs are understood: the archive's own per-VM CSV files (a folder of them, or one file;
read by :mod:`features.importers.gwa_csv`) and the Parquet form of the shared datasets (a
``.parquet`` file or a folder of them; :mod:`features.importers.gwa_parquet`). Both become the
same raw frame, which :mod:`features.importers.gwa_convert` turns into telemetry; its module
docstring states every assumption of the mapping. The output is a dataset folder of Parquet
parts, ``settings.gwa.vms_per_part`` VMs each, sorted by (``user_id``, ``event_timestamp``).

Every input row becomes one output row. Bad input raises :class:`GwaFormatError` naming the file
and the line (CSV) or row (Parquet), and leaves no partial dataset behind.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.io import clear_dataset, write_telemetry_part
from core.schema import empty_frame
from core.settings import Settings, get_settings
from features.importers.gwa_convert import (
    Quirks,
    count_quirks,
    to_telemetry,
    user_id,
    user_ranks,
)
from features.importers.gwa_csv import read_gwa_csv, vm_id_from_path
from features.importers.gwa_format import GwaFormatError
from features.importers.gwa_parquet import read_gwa_parquet

__all__ = ["GwaFormatError", "ImportSummary", "import_gwa", "read_gwa_csv", "to_telemetry"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ImportSummary:
    """What an import read and wrote, and the source's oddities it kept or resolved."""

    rows_in: int
    rows_out: int
    vms: int
    files: list[Path]  # the part files written
    source_format: str  # "csv" | "parquet"
    powered_off_rows: int = 0  # session_active False, all resources 0
    zeroed_usage_rows: int = 0  # powered off with some residual usage in the source, set to 0
    duplicate_timestamps: int = 0  # rows repeating their VM's previous timestamp; kept


def import_gwa(
    src: Path,
    out: Path,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> ImportSummary:
    """Import the trace at ``src`` into the telemetry dataset folder ``out``.

    ``src`` is a folder of archive CSV files (VM id = file stem), one such file, a Parquet-form
    file or a folder of them. ``out``'s old parts are removed first. ``progress(done, total)``
    is called after each part with the number of VMs written so far and in all.
    """
    settings = settings or get_settings()
    source_format, inputs = _locate_inputs(Path(src))
    out = Path(out)
    clear_dataset(out)
    try:
        return _write_parts(source_format, inputs, out, progress, settings)
    except BaseException:
        clear_dataset(out)  # a failed import must not look like a complete dataset
        raise


def _write_parts(
    source_format: str,
    inputs: list[Path],
    out: Path,
    progress: Progress | None,
    settings: Settings,
) -> ImportSummary:
    """Convert and write one part per batch of VMs; tally the summary."""
    if source_format == "csv":
        vms, batches = _csv_batches(inputs, settings)
    else:
        vms, batches = _parquet_batches(inputs, settings)
    files: list[Path] = []
    rows_in = rows_out = vms_done = 0
    quirks: list[Quirks] = []
    for raw in batches:
        telemetry = to_telemetry(raw, settings)
        files.append(write_telemetry_part(telemetry, out, len(files)))
        rows_in += len(raw)
        rows_out += len(telemetry)
        quirks.append(count_quirks(raw))
        vms_done += raw["vm_id"].nunique()
        if progress is not None:
            progress(vms_done, vms)
    if not files:  # an input without rows still yields a readable, empty dataset
        files.append(write_telemetry_part(empty_frame(), out, 0))
    return ImportSummary(
        rows_in=rows_in,
        rows_out=rows_out,
        vms=vms,
        files=files,
        source_format=source_format,
        powered_off_rows=sum(q.powered_off_rows for q in quirks),
        zeroed_usage_rows=sum(q.zeroed_usage_rows for q in quirks),
        duplicate_timestamps=sum(q.duplicate_timestamps for q in quirks),
    )


def _locate_inputs(src: Path) -> tuple[str, list[Path]]:
    """The source's format and its input files; refuses anything that is neither form."""
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    if src.is_file():
        files = [src]
    else:
        files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
    formats = {p.suffix.lower().lstrip(".") for p in files} & {"csv", "parquet"}
    if len(formats) != 1:
        problem = "mixes .csv and .parquet files" if formats else "has no .csv or .parquet file"
        raise GwaFormatError(f"{src}: {problem}")
    source_format = formats.pop()
    return source_format, [p for p in files if p.suffix.lower() == f".{source_format}"]


def _csv_batches(paths: list[Path], settings: Settings) -> tuple[int, Iterator[pd.DataFrame]]:
    """The VM count and, lazily, raw frames of ``vms_per_part`` CSV files each, in user order."""
    by_vm: dict[int, Path] = {}
    for path in paths:
        vm = vm_id_from_path(path)
        if vm in by_vm:
            raise GwaFormatError(f"{path}: VM {vm} already read from {by_vm[vm]}")
        by_vm[vm] = path
    ordered = sorted(by_vm.values(), key=lambda p: user_id(vm_id_from_path(p), settings))
    size = settings.gwa.vms_per_part

    def batches() -> Iterator[pd.DataFrame]:
        for start in range(0, len(ordered), size):
            chunk = ordered[start : start + size]
            yield pd.concat([read_gwa_csv(p, settings) for p in chunk], ignore_index=True)

    return len(ordered), batches()


def _parquet_batches(paths: list[Path], settings: Settings) -> tuple[int, Iterator[pd.DataFrame]]:
    """The VM count and raw frames of ``vms_per_part`` VMs each, in user order (files merged)."""
    raw = pd.concat([read_gwa_parquet(p, settings) for p in paths], ignore_index=True)
    ranks, labels = user_ranks(raw["vm_id"].to_numpy(), settings)
    order = np.argsort(ranks, kind="stable")
    firsts = np.arange(0, len(labels), settings.gwa.vms_per_part)  # first VM rank of each part
    edges = [*np.searchsorted(ranks[order], firsts).tolist(), len(raw)]

    def batches() -> Iterator[pd.DataFrame]:
        for start, stop in itertools.pairwise(edges):
            yield raw.iloc[order[start:stop]]

    return len(labels), batches()
