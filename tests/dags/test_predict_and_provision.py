"""predict_and_provision, run for real with dag.test() on the embedded default and a live router."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from core.settings import get_settings
from tests.serving.predict_world import build_world
from tests.serving.router.conftest import free_port, live_server

TOKEN = "dag-test-token"


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_it_runs_on_fresh_features_and_hourly(dagbag) -> None:
    from airflow.sdk import AssetOrTimeSchedule

    dag = dagbag.get_dag("predict_and_provision")
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert "prewarm://features/hourly" in str(dag.timetable.asset_condition)
    assert set(dag.params) == {"dry_run", "budget_usd_per_hour"}


@pytest.fixture
def router(isolated_home, monkeypatch: pytest.MonkeyPatch):
    """A live router on loopback, reachable through the Airflow connection prewarm_router."""
    from serving.router.app import create_app

    port = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_PREWARM_ROUTER",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "password": TOKEN}),
    )
    with live_server(create_app(get_settings(), token=TOKEN), port) as url:
        yield url


def test_a_cycle_predicts_holds_warm_capacity_and_pushes_the_routing_config(
    dagbag, isolated_home, router
) -> None:
    import httpx

    from serving.provisioning.ledger import Ledger
    from serving.provisioning.states import LIVE

    world = build_world(isolated_home)
    dag = dagbag.get_dag("predict_and_provision")
    now = world.end + timedelta(minutes=30)

    dry = dag.test(run_after=now - timedelta(minutes=5), run_conf={"dry_run": True})
    assert str(dry.state) == "success", _states(dry)
    states = _states(dry)
    assert states["provision"] == "success" and states["push_router_config"] == "skipped"
    ledger = Ledger.from_settings(get_settings())
    assert ledger.reservations(states=LIVE) == []

    # dag.test() leaves the previous run's conf on the DAG's params: say it again.
    real = dag.test(run_after=now, run_conf={"dry_run": False})
    assert str(real.state) == "success", _states(real)
    assert set(_states(real)) == {
        "plan_shards", "predict_shard", "finalize", "place", "provision", "housekeep",
        "routing_config", "push_router_config",
    }  # fmt: skip
    held = ledger.reservations(states=LIVE)
    ledger.dispose()
    assert held, "the cycle held no warm capacity for anyone"
    config = httpx.get(f"{router}/v1/config", headers={"Authorization": f"Bearer {TOKEN}"})
    assert config.status_code == 200
    assert config.json()["version"] == int(now.timestamp())
    assert config.json()["users"] == world.telemetry["user_id"].nunique()
