"""`prewarm demo`: the main job on the embedded default, through the Airflow DAGs.

It simulates a world and lands its telemetry as a batch, then runs the four DAGs in order with
a local Airflow on SQLite, each at the end of the simulated history (their "now"):
``telemetry_ingest`` (great-expectations gate, offline store, hourly features, online store) →
``nightly_retrain`` (the LSTM, MLflow run, registry, promotion gate) →
``predict_and_provision`` with a router running (forecasts, placement, warm holds, router
config) → the world's last hour replayed to the router as client probes, whose measurements
the router exports → ``feedback_collect`` (feedback features, realised error, drift). Last,
``prewarm evaluate`` plays the days after its training range under each policy.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from core.settings import Settings, get_settings
from features.ingest import find_new_batches
from prewarm.airflow_local import DagRunResult, ensure_metadata_db, run_dag

DAG_ORDER: tuple[str, ...] = (
    "telemetry_ingest", "nightly_retrain", "predict_and_provision", "feedback_collect"
)  # fmt: skip
DEMO_STAGES: tuple[str, ...] = (
    "simulate", "airflow db", "telemetry_ingest", "nightly_retrain",
    "predict_and_provision + probes", "feedback_collect", "evaluate",
)  # fmt: skip


@dataclass(frozen=True)
class DemoSummary:
    """What the demo did and where to look."""

    batch: Path
    rows: int
    runs: list[DagRunResult]
    ingest: dict
    online_sample: list[dict]
    skipped: dict[str, str] = field(default_factory=dict)
    probes: dict = field(default_factory=dict)
    evaluation: dict | None = None
    evaluation_dir: Path | None = None
    evaluation_error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every DAG run that was started succeeded, and so did the evaluation."""
        return all(run.ok for run in self.runs) and self.evaluation_error is None


def world_end(settings: Settings) -> datetime:
    """The end of the demo world's history: the "now" at which its DAGs run."""
    start = pd.Timestamp(settings.simulation.start, tz="UTC")
    return (start + timedelta(days=settings.demo.days)).to_pydatetime()


def land_simulated_world(settings: Settings, progress=None) -> tuple[Path, int]:
    """Simulate the demo world into the landing folder (atomically: write, then rename)."""
    from simulation.world import simulate

    demo = settings.demo
    final = _landed_batch(settings)
    if final.exists():
        return final, _row_count(final)
    staging = settings.landing_dir / f"_{final.name}"
    summary = simulate(
        users=demo.users, days=demo.days, seed=demo.seed, out=staging, progress=progress
    )
    os.replace(staging, final)
    return final, summary.rows


def _row_count(folder: Path) -> int:
    import pyarrow.dataset as ds

    return ds.dataset(folder, format="parquet").count_rows()


def run_demo(
    settings: Settings | None = None,
    progress=None,
    step: Callable[[str], None] | None = None,
    stage_done: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Run the demo end to end; ``step(text)`` announces what happens next.

    ``progress(done, total)`` follows the simulation; ``stage_done(name)`` is called as each of
    ``DEMO_STAGES`` ends.

    Stops at the first DAG run that fails (later stages need its output); the summary says
    which runs happened and how they ended.
    """
    settings = settings or get_settings()
    announce = step or (lambda text: None)
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[name] = round(now - clock, 1)
        clock = now
        if stage_done is not None:
            stage_done(name)

    announce("simulating the world")
    batch, rows = land_simulated_world(settings, progress)
    lap("simulate")
    announce("preparing Airflow (SQLite metadata database)")
    ensure_metadata_db(settings)
    lap("airflow db")
    end = world_end(settings)
    runs: list[DagRunResult] = []
    skipped: dict[str, str] = {}
    probes: dict = {}
    if find_new_batches(settings):
        announce(f"running DAG telemetry_ingest (at {end:%Y-%m-%d %H:%M} UTC, the world's end)")
        runs.append(run_dag("telemetry_ingest", settings=settings, run_after=end))
    else:
        # The DAG's sensor would wait up to an hour for a batch; there is none to wait for.
        skipped["telemetry_ingest"] = "no new batch in the landing folder"
        announce("telemetry_ingest: no new batch in the landing folder, nothing to run")
    lap("telemetry_ingest")
    if all(run.ok for run in runs):
        conf = {"epochs": settings.demo.epochs} if settings.demo.epochs else {}
        announce("running DAG nightly_retrain (LSTM training, MLflow registry)")
        runs.append(run_dag("nightly_retrain", conf, settings=settings, run_after=end))
        lap("nightly_retrain")
    if all(run.ok for run in runs):
        probes = _serve_with_router(settings, end, runs, announce)
        lap("predict_and_provision + probes")
    if all(run.ok for run in runs):
        from serving.feedback import find_feedback_batches

        if find_feedback_batches(settings):
            announce("running DAG feedback_collect (router measurements → features, drift)")
            runs.append(run_dag("feedback_collect", settings=settings, run_after=end))
        else:
            skipped["feedback_collect"] = "the router exported no new measurements"
            announce("feedback_collect: the router exported no new measurements, nothing to run")
        lap("feedback_collect")
    evaluation = None
    evaluation_dir = settings.home / "evaluation"
    evaluation_error = None
    if all(run.ok for run in runs):
        try:
            evaluation = run_evaluation(settings, evaluation_dir, announce)
        except Exception as exc:  # reported with the DAG runs, and the demo exits non-zero
            evaluation_error = f"{type(exc).__name__}: {exc}"
        lap("evaluate")
    return DemoSummary(
        batch=batch,
        rows=rows,
        runs=runs,
        ingest=_ingest_totals(settings),
        online_sample=_online_sample(settings),
        skipped=skipped,
        probes=probes,
        evaluation=evaluation,
        evaluation_dir=evaluation_dir if evaluation is not None else None,
        evaluation_error=evaluation_error,
        seconds=timings,
    )


def _serve_with_router(
    settings: Settings, end: datetime, runs: list[DagRunResult], announce: Callable[[str], None]
) -> dict:
    """predict_and_provision with a router running, then the probe replay and its export."""
    from prewarm.demo_probes import build_probes, latest_routing_config, replay_probes
    from prewarm.router_process import running_router
    from serving.feedback import find_feedback_batches

    # The router exports its measurements every few seconds here (minutes in production),
    # so the demo need not wait for feedback_collect's input.
    router_env = {"PREWARM_ROUTER__FEEDBACK_EXPORT_SECONDS": "1"}
    announce("starting the router (prewarm router serve, generated admin token)")
    with running_router(settings, env=router_env) as router:
        announce(f"running DAG predict_and_provision (router at {router.url})")
        run = run_dag(
            "predict_and_provision", settings=settings, run_after=end, env=router.connection_env()
        )
        runs.append(run)
        if not run.ok:
            return {}
        config_path = latest_routing_config(settings)
        if config_path is None:
            return {}
        config = json.loads(config_path.read_text())
        probes = build_probes(
            _landed_batch(settings), config, end, settings, settings.demo.probe_hours
        )
        if not probes:
            return {"probes": 0, "users": 0, "switch_decisions": 0, "config": str(config_path)}
        announce(f"replaying the world's last {settings.demo.probe_hours:g} h as "
                 f"{len(probes):,} client probes to the router")  # fmt: skip
        before = set(find_feedback_batches(settings))
        replay = replay_probes(router.url, probes)
        deadline = time.monotonic() + settings.demo.feedback_wait_seconds
        while time.monotonic() < deadline and not set(find_feedback_batches(settings)) - before:
            time.sleep(0.5)
        exported = bool(set(find_feedback_batches(settings)) - before)
    return {"probes": replay.probes, "users": replay.users,
            "switch_decisions": replay.switch_decisions, "config": str(config_path),
            "exported": exported}  # fmt: skip


def _landed_batch(settings: Settings) -> Path:
    demo = settings.demo
    return settings.landing_dir / f"simulated-{demo.users}u-{demo.days}d-seed{demo.seed}"


def run_evaluation(
    settings: Settings, out: Path, announce: Callable[[str], None] = lambda text: None
) -> dict:
    """``prewarm evaluate`` on the demo world's users and seed, ``demo.eval_days`` days."""
    from simulation.evaluate import evaluate
    from simulation.policies import POLICIES

    demo = settings.demo
    names = list(demo.eval_policies or POLICIES)
    history = settings.evaluation.train_days
    announce(f"prewarm evaluate: {demo.users} users, {demo.eval_days} days after {history} "
             f"days of history, policies {', '.join(names)}")  # fmt: skip
    return evaluate(
        demo.users, demo.eval_days, demo.seed, names, out, settings=settings,
        progress=lambda name: announce(f"  evaluating {name}"),
    )  # fmt: skip


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
