"""Simulator throughput: 1,000 users × 30 days at 5-minute steps, generated and written.

Reference measured in the same run: writing the very same rows to Parquet again with pyarrow
(the I/O floor), so ``ratio_to_write_floor`` says how much the simulation itself costs on top.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq

USERS = 1_000
DAYS = 30
SEED = 7


def run(users: int = USERS, days: int = DAYS, seed: int = SEED) -> dict[str, Any]:
    """Time ``simulate(users, days)`` end to end and the plain Parquet write of its output."""
    from simulation.world import simulate

    with tempfile.TemporaryDirectory(prefix="prewarm-bench-sim-") as tmp:
        out = Path(tmp) / "telemetry"
        summary = simulate(users=users, days=days, seed=seed, out=out)
        table = ds.dataset(out, format="parquet").to_table()
        started = time.perf_counter()
        pq.write_table(table, Path(tmp) / "rewrite.parquet", compression="zstd")
        write_seconds = time.perf_counter() - started
    return {
        "users": users,
        "days": days,
        "rows": summary.rows,
        "seconds": round(summary.seconds, 3),
        "rows_per_s": round(summary.rows / summary.seconds),
        "parquet_write_reference_seconds": round(write_seconds, 3),
        "ratio_to_write_floor": round(summary.seconds / write_seconds, 2),
        "target_seconds": 60,
    }
