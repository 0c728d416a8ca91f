"""Reading and writing telemetry datasets as folders of Parquet files.

A telemetry dataset is a folder of ``part-NNNNN.parquet`` files with the schema of
``core.schema``; ``pandas.read_parquet(folder)`` reads it whole. Writes are deterministic (same
frame, same bytes) and atomic per file (written to a temporary name, then renamed).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.schema import ARROW_SCHEMA, conform


def part_path(out_dir: Path, index: int) -> Path:
    """Path of the ``index``-th part file of a dataset folder."""
    return Path(out_dir) / f"part-{index:05d}.parquet"


def write_telemetry_part(frame: pd.DataFrame, out_dir: Path, index: int) -> Path:
    """Conform ``frame`` to the schema and write it as part ``index`` of the dataset ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(conform(frame), schema=ARROW_SCHEMA, preserve_index=False)
    target = part_path(out_dir, index)
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=1_000_000)
    os.replace(tmp, target)
    return target


def clear_dataset(out_dir: Path) -> None:
    """Remove the part files of a dataset folder so that a rewrite leaves no stale parts."""
    for old in Path(out_dir).glob("part-*.parquet"):
        old.unlink()


def read_telemetry(path: Path) -> pd.DataFrame:
    """Read a telemetry dataset folder (or one Parquet file) and conform it to the schema."""
    return conform(pd.read_parquet(path))
