"""The production configuration run for real: Airflow on PostgreSQL with two Celery workers.

One test, end to end (issue #8, item 2): its own PostgreSQL databases (Airflow metadata, MLflow
backend, reservation ledger) and Redis keys (Celery broker, Feast online store, router state);
``mlflow server`` holding the ``@champion``; the router on Redis; Airflow's api-server,
scheduler, dag-processor and two Celery workers as processes. ``predict_and_provision`` is
triggered through the REST API, and the REST API says where each mapped shard ran.
Everything is removed afterwards, also when the test fails.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from core.settings import get_settings
from features.store import feature_store
from prewarm.stack import LocalStack
from serving.cycle import cycle_id
from serving.predictions_store import read_predictions
from serving.provisioning.ledger import Ledger
from serving.provisioning.states import LIVE
from tests.serving.predict_world import USERS, build_world

pytestmark = pytest.mark.slow

DAG_ID = "predict_and_provision"
SHARD_USERS = 2  # 6 users: three mapped predict_shard instances for two workers


def _require_postgres_and_redis() -> None:
    psycopg2 = pytest.importorskip("psycopg2")
    redis = pytest.importorskip("redis")
    try:
        psycopg2.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=2
        ).close()
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except (psycopg2.OperationalError, redis.exceptions.ConnectionError) as error:
        pytest.skip(f"PostgreSQL and Redis must run on 127.0.0.1: {error}")


def _interval(ti: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"])


def _overlap(a: dict, b: dict) -> bool:
    (a0, a1), (b0, b1) = _interval(a), _interval(b)
    return a0 < b1 and b0 < a1


def test_predict_and_provision_runs_its_shards_on_both_celery_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_postgres_and_redis()
    stack = LocalStack(
        tmp_path / "stack", extra_prewarm_env={"PREWARM_PREDICT__SHARD_USERS": str(SHARD_USERS)}
    )
    with stack:
        stack.create_resources()
        stack.start_services()
        # This process builds the world against the same MLflow server, Feast and ledger.
        for name, value in stack.prewarm_env().items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        world = build_world(stack.home)
        stack.start_airflow(workers=2, concurrency=1)
        stack.wait_for_dag(DAG_ID)

        run_after = world.end + timedelta(minutes=30)
        run_id = "integration_celery"
        stack.trigger(DAG_ID, run_id, run_after.to_pydatetime(), {"dry_run": False})
        run = stack.wait_for_run(DAG_ID, run_id, timeout=300)
        instances = stack.task_instances(DAG_ID, run_id)
        states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in instances}
        assert run["state"] == "success", (states, stack.log_tail("scheduler"))

        # The champion came from the MLflow server: no fallback.
        planned = stack.xcom(DAG_ID, run_id, "plan_shards")
        assert {(p["mode"], p["fallback"], p["model_version"]) for p in planned} == {
            ("model", None, world.version)
        }

        # The mapped shards ran on both workers, and two of them at the same time.
        shards = [ti for ti in instances if ti["task_id"] == "predict_shard"]
        assert len(shards) == -(-USERS // SHARD_USERS)
        assert {ti["hostname"] for ti in shards} == set(stack.workers.values())
        assert any(
            _overlap(a, b) for a in shards for b in shards if a["hostname"] != b["hostname"]
        ), [(ti["hostname"], ti["start_date"], ti["end_date"]) for ti in shards]
        assert {ti["executor"] for ti in instances} <= {None, "CeleryExecutor"}

        # Outputs: predictions on disk, warm holds in the PostgreSQL ledger, the router's
        # config (and state in Redis), Feast rows in Redis.
        settings = get_settings()
        profiles, _ = read_predictions(cycle_id(run_id), settings)
        assert profiles["user_id"].nunique() == USERS
        assert settings.provisioning.ledger_url.startswith("postgresql")
        ledger = Ledger.from_settings(settings)
        try:
            assert ledger.reservations(states=LIVE), "no warm hold in the PostgreSQL ledger"
        finally:
            ledger.dispose()
        config = httpx.get(
            f"{stack.endpoints.router}/v1/config",
            headers={"Authorization": f"Bearer {stack.router_token}"},
            timeout=30,
        )
        assert config.status_code == 200
        assert config.json()["version"] == int(run_after.timestamp())
        assert config.json()["users"] == USERS
        keys = stack.redis_key_counts()
        assert keys["router"] > 0 and keys["feast"] > 0 and keys["celery"] > 0, keys
        # Feast's registry is the SQL one in PostgreSQL, shared by the workers and this process.
        assert settings.feast.registry_url == stack.endpoints.databases["feast"]
        views = {view.name for view in feature_store(settings).list_feature_views()}
        assert "user_predictions" in views

    assert stack.leftovers() == {"databases": 0, "redis_keys": 0}
