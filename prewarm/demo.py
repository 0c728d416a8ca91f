"""`prewarm demo`: the main job on the embedded default, through the Airflow DAGs.

It simulates a world, lands its telemetry as a batch, and runs ``telemetry_ingest`` with a
local Airflow on SQLite: the great-expectations gate, the offline store, hourly features and
their materialisation to the SQLite online store. Later stages (training, prediction,
provisioning, the router, the feedback loop) join the demo as their DAGs land.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings, get_settings
from features.ingest import find_new_batches
from prewarm.airflow_local import DagRunResult, ensure_metadata_db, run_dag


@dataclass(frozen=True)
class DemoSummary:
    """What the demo did and where to look."""

    batch: Path
    rows: int
    runs: list[DagRunResult]
    ingest: dict
    online_sample: list[dict]


def land_simulated_world(settings: Settings, progress=None) -> tuple[Path, int]:
    """Simulate the demo world into the landing folder (atomically: write, then rename)."""
    from simulation.world import simulate

    demo = settings.demo
    name = f"simulated-{demo.users}u-{demo.days}d-seed{demo.seed}"
    final = settings.landing_dir / name
    if final.exists():
        return final, _row_count(final)
    staging = settings.landing_dir / f"_{name}"
    summary = simulate(
        users=demo.users, days=demo.days, seed=demo.seed, out=staging, progress=progress
    )
    os.replace(staging, final)
    return final, summary.rows


def _row_count(folder: Path) -> int:
    import pyarrow.dataset as ds

    return ds.dataset(folder, format="parquet").count_rows()


def run_demo(settings: Settings | None = None, progress=None, step=None) -> DemoSummary:
    """Run the demo end to end; ``step(text)`` announces each stage."""
    settings = settings or get_settings()
    announce = step or (lambda text: None)
    announce("simulating the world")
    batch, rows = land_simulated_world(settings, progress)
    announce("preparing Airflow (SQLite metadata database)")
    ensure_metadata_db(settings)
    runs = []
    if find_new_batches(settings):
        announce("running DAG telemetry_ingest")
        runs.append(run_dag("telemetry_ingest", settings=settings))
    else:
        # The DAG's sensor would wait up to an hour for a batch; there is none to wait for.
        announce("telemetry_ingest: no new batch in the landing folder, nothing to run")
    return DemoSummary(
        batch=batch,
        rows=rows,
        runs=runs,
        ingest=_ingest_totals(settings),
        online_sample=_online_sample(settings),
    )


def _ingest_totals(settings: Settings) -> dict:
    """Rows in, valid and quarantined over every recorded batch."""
    import json

    totals = {"batches": 0, "rows_in": 0, "rows_valid": 0, "rows_quarantined": 0, "rejected": 0}
    for record in sorted((settings.ingest_dir / "batches").glob("*.json")):
        found = json.loads(record.read_text())
        totals["batches"] += 1
        totals["rejected"] += found["status"] == "rejected"
        for key in ("rows_in", "rows_valid", "rows_quarantined"):
            totals[key] += found[key]
    return totals


def _online_sample(settings: Settings, users: int = 3) -> list[dict]:
    """A few users' online features, as a prediction service would read them."""
    from features.store import feature_store, online_features
    from simulation.world import user_id_labels

    ids = list(user_id_labels(settings.demo.users)[:users])
    frame = online_features(feature_store(settings), ids)
    wanted = ("user_id", "cpu_cores_mean", "ram_gb_mean", "latency_mean_ms", "last_region")
    return frame[[c for c in wanted if c in frame.columns]].to_dict(orient="records")
