"""Closed-loop evaluation: the same world, served by each policy in turn (``prewarm evaluate``).

A world is simulated over ``settings.evaluation.train_days`` days of history followed by the
evaluation range; policies see the history and, step by step, what monitoring records of the
evaluation range, while the engine accounts every user-minute against the truth. Results are a
deterministic function of the arguments and the settings.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from core.latency import LatencyModel
from core.settings import Settings, get_settings
from simulation.eval_engine import Engine
from simulation.eval_mlflow import log_evaluation
from simulation.eval_policy import PolicyContext
from simulation.eval_record import WorldRecord, record_world
from simulation.eval_trace import PolicyTrace
from simulation.policies import POLICIES
from simulation.predictive import PredictivePolicy, summary
from simulation.report import write_report
from simulation.world import World, WorldConfig

RESULTS_FILE = "results.json"
LEDGERS_DIR = "ledgers"  # out/ledgers/<policy>/: its reservation ledger and local cloud
logger = logging.getLogger(__name__)


def evaluate(
    users: int,
    days: int,
    seed: int,
    policies: Sequence[str],
    out: Path | None = None,
    settings: Settings | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate ``policies`` on a world of ``users`` over ``days`` days after the training range.

    Returns ``{"policies": {name: metrics}}``. With ``out``, also writes ``out/results.json``
    (DESIGN.md section 4) and ``out/report.html``, and logs both with every policy's metrics as
    one MLflow run; each policy's reservation ledger and local cloud stay in
    ``out/ledgers/<policy>/``. Unknown policy names raise ValueError.
    """
    settings = settings if settings is not None else get_settings()
    unknown = [name for name in policies if name not in POLICIES]
    if unknown or not policies:
        raise ValueError(f"unknown or no policies {unknown}; known: {', '.join(POLICIES)}")
    train_days = settings.evaluation.train_days
    world = World(WorldConfig(users=users, days=train_days + days, seed=seed), settings)
    latency = LatencyModel(settings.latency)
    record = record_world(world, latency)
    context = _context(world, record, latency, settings, train_days)
    engine = Engine(context, record, settings)
    results: dict = {"policies": {}}
    traces: dict[str, PolicyTrace] = {}
    steps = record.n_steps - context.first_step
    for name in policies:
        if progress is not None:
            progress(name)
        policy = POLICIES[name](context, record)
        trace = directory = None
        if out is not None:
            trace = PolicyTrace.empty(record.n_users, steps, len(context.catalogue))
            traces[name] = trace
            directory = _fresh(out / LEDGERS_DIR / name)
        results["policies"][name] = engine.run(policy, trace, directory)
        if isinstance(policy, PredictivePolicy):
            results.setdefault("details", {})[name] = summary(policy)
    if out is not None:
        files = [write_results(results, out), write_report(results, traces, record, context, out)]
        params = {"users": users, "days": days, "seed": seed, "train_days": train_days,
                  "policies": ",".join(policies)}  # fmt: skip
        run_id = log_evaluation(results, params, files, settings)
        logger.info("evaluation logged to MLflow run %s (%s)", run_id, settings.mlflow_tracking_uri)
    return results


def _context(
    world: World, record: WorldRecord, latency: LatencyModel, settings: Settings, train_days: int
) -> PolicyContext:
    steps_per_hour = 60 // world.interval_minutes
    return PolicyContext(
        settings=settings,
        catalogue=world.catalogue,
        latency=latency,
        home_region=world.home_region.astype("int64"),
        first_step=train_days * 24 * steps_per_hour,
        steps_per_hour=steps_per_hour,
        interval_seconds=world.interval_minutes * 60.0,
        utilisation=record.utilisation,
        start=world.times[0],
        user_ids=tuple(str(u) for u in world.user_ids),
        roles=tuple(str(r) for r in world.users["role"]),
        seed=world.config.seed,
    )


def _fresh(directory: Path) -> Path:
    """``directory``, emptied of an earlier run's ledger (a re-run starts from nothing)."""
    if directory.exists():
        shutil.rmtree(directory)
    return directory


def write_results(results: dict, out: Path) -> Path:
    """Write ``results`` as ``out/results.json`` (atomically: a killed run leaves no half file)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / RESULTS_FILE
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    partial.replace(target)
    return target
