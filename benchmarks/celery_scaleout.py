"""Celery scale-out: batch prediction throughput of ``predict_and_provision``, 1 vs 2 workers.

The production configuration as processes (``prewarm.stack.LocalStack``: Airflow on PostgreSQL
with the CeleryExecutor on Redis, ``mlflow server`` on PostgreSQL, Feast online in Redis, the
ledger in PostgreSQL, the router on Redis). Setup, not timed: the synthetic world of
``benchmarks.batch_predict`` (``users`` users' hourly features and a registered ``@champion``)
against that MLflow server and Feast store.

Measured in the same run, on the same world, shards and model: the DAG is triggered through
the REST API (``dry_run``: the plan is made, nothing is held or pushed), alternately with one
Celery worker and with two (``--concurrency 1`` each: a shard is single-threaded, as in
production), ``repeats`` runs each. A run's batch-prediction throughput is its users divided
by the span of its mapped ``predict_shard`` task instances as the REST API reports them (first
start to last end): task start-up, model download from the MLflow server, features, forecast,
writes and the online push all count, and so does Celery's hand-off. Beside each task's
duration, ``shard_work_seconds`` is what ``predict_shard`` timed itself (its XCom's stages):
the difference is the fixed cost of starting a task. Each figure is the best
run of its configuration; ``ratio`` is the median of the back-to-back ratios.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

USERS = 4_000
SHARDS = 4
REPEATS = 2
DAG_ID = "predict_and_provision"


def run(users: int = USERS, shards: int = SHARDS, repeats: int = REPEATS) -> dict[str, Any]:
    """Time the DAG's mapped batch prediction with one Celery worker, then two, in turns."""
    from benchmarks.batch_predict import END, _stock
    from core.settings import Settings
    from prewarm.stack import LocalStack

    shard_users = math.ceil(users / shards)
    with tempfile.TemporaryDirectory(prefix="prewarm-bench-celery-") as tmp:
        stack = LocalStack(
            Path(tmp) / "stack",
            extra_prewarm_env={"PREWARM_PREDICT__SHARD_USERS": str(shard_users)},
        )
        with stack:
            stack.create_resources()
            stack.start_services()
            with _environment(stack.prewarm_env()):
                settings = Settings()
            _stock(settings, users)
            stack.start_airflow(workers=1, concurrency=1)
            stack.wait_for_dag(DAG_ID)
            run_after = (END + timedelta(minutes=10)).to_pydatetime()
            one: list[dict[str, Any]] = []
            two: list[dict[str, Any]] = []
            for attempt in range(repeats):
                one.append(_measure(stack, f"bench_1w_{attempt}", run_after, users))
                stack.start_worker(2, concurrency=1)
                two.append(_measure(stack, f"bench_2w_{attempt}", run_after, users))
                stack.stop_worker(2)
    best_one = max(one, key=lambda r: r["users_per_s"])
    best_two = max(two, key=lambda r: r["users_per_s"])
    ratios = [b["users_per_s"] / a["users_per_s"] for a, b in zip(one, two, strict=True)]
    return {
        "users": users,
        "shards": shards,
        "one_worker_users_per_s": round(best_one["users_per_s"], 1),
        "two_workers_users_per_s": round(best_two["users_per_s"], 1),
        "ratio": round(statistics.median(ratios), 2),
        "shards_per_worker": best_two["shards_per_worker"],
        "rounds_ratio": [round(r, 2) for r in ratios],
        "one_worker_runs": one,
        "two_worker_runs": two,
        "worker_concurrency": 1,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "repeats": repeats,
    }


def _measure(stack: Any, run_id: str, run_after: datetime, users: int) -> dict[str, Any]:
    """Trigger one run, wait for it, and time its predict_shard instances from the REST API."""
    stack.trigger(DAG_ID, run_id, run_after, {"dry_run": True})
    finished = stack.wait_for_run(DAG_ID, run_id, timeout=900)
    if finished["state"] != "success":
        raise RuntimeError(f"{run_id} ended {finished['state']}:\n{stack.log_tail('scheduler')}")
    shards = [ti for ti in stack.task_instances(DAG_ID, run_id) if ti["task_id"] == "predict_shard"]
    starts = [datetime.fromisoformat(ti["start_date"]) for ti in shards]
    ends = [datetime.fromisoformat(ti["end_date"]) for ti in shards]
    span = (max(ends) - min(starts)).total_seconds()
    per_worker: dict[str, int] = {}
    for ti in shards:
        worker = ti["hostname"].split("@", 1)[0]
        per_worker[worker] = per_worker.get(worker, 0) + 1
    durations = [(e - s).total_seconds() for s, e in zip(starts, ends, strict=True)]
    # What predict_shard itself timed (model load, features, forecast, writes, online push);
    # the rest of a task's duration is its start-up (process, imports) and its reporting.
    work = [
        sum(stack.xcom(DAG_ID, run_id, "predict_shard", ti["map_index"])["stage_seconds"].values())
        for ti in shards
    ]
    return {
        "run_id": run_id,
        "users_per_s": users / span,
        "span_seconds": round(span, 2),
        "shard_seconds": [round(d, 2) for d in sorted(durations)],
        "shard_work_seconds": [round(w, 2) for w in sorted(work)],
        "shards_per_worker": dict(sorted(per_worker.items())),
    }


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (the settings are read inside it), then restore."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
