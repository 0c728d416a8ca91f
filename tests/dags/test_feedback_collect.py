"""feedback_collect, run for real with dag.test() on simulated router metrics."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from core.settings import get_settings
from tests.serving.router.conftest import WEST
from tests.serving.test_feedback import NOW, hold, probe, router_with_probes

DRIFT_URI = "prewarm://feedback/drift"


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _drift_events() -> list[dict]:
    """The extra of every event of the drift Asset in the Airflow metadata DB, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == DRIFT_URI)
            .order_by(AssetEvent.id)
        )
        return list(session.scalars(query))


@pytest.fixture
def world(isolated_home, monkeypatch: pytest.MonkeyPatch):
    """Router metrics waiting for ingest, and four resolved pre-allocations, three unused."""
    from serving.feedback_export import export_router_feedback
    from serving.provisioning.ledger import Ledger

    monkeypatch.setenv("PREWARM_FEEDBACK__MIN_RESOLVED_RESERVATIONS", "4")
    get_settings.cache_clear()
    settings = get_settings()
    at = NOW - timedelta(minutes=5)
    service = router_with_probes(
        settings, [probe("u1", WEST, 30.0, at), probe("u2", WEST, 120.0, at)]
    )
    assert export_router_feedback(settings, NOW, service.store) is not None
    service.store.close()
    ledger = Ledger.from_settings(settings)
    for n in range(4):
        hold(ledger, f"u{n}", used=n == 0)
    ledger.dispose()
    return settings


def test_feedback_collect_writes_features_and_emits_drift_only_on_drift(dagbag, world) -> None:
    from features.store import repo_path

    dag = dagbag.get_dag("feedback_collect")
    before = _drift_events()
    calm = dag.test(run_after=NOW, run_conf={"max_unused_share": 0.9})
    assert str(calm.state) == "success", _states(calm)
    assert _states(calm)["emit_drift"] == "skipped"
    assert len(_drift_events()) == len(before)

    offline = pd.read_parquet(repo_path(world) / "offline" / "router_feedback.parquet")
    assert sorted(offline["user_id"]) == ["u1", "u2"]
    records = sorted((world.serving_dir / "feedback" / "drift").glob("*.json"))
    assert len(records) == 1 and '"drift": false' in records[0].read_text()

    from serving.feedback_export import export_router_feedback
    from serving.router.service import RouterService
    from serving.router.sqlite_store import SqliteRouterStore

    store = SqliteRouterStore(world.serving_dir / world.router.sqlite_file, 10)
    RouterService(store, world, clock=lambda: NOW).handle_probes([probe("u1", WEST, 35.0, NOW)])
    assert export_router_feedback(world, NOW + timedelta(minutes=1), store) is not None
    store.close()

    # dag.test() leaves the previous run's conf on the DAG's params: say it again.
    drift = dag.test(run_after=NOW + timedelta(hours=1), run_conf={"max_unused_share": 0.5})
    assert str(drift.state) == "success", _states(drift)
    assert _states(drift)["emit_drift"] == "success"
    events = _drift_events()
    assert len(events) == len(before) + 1
    assert "unused pre-allocation share 0.750" in events[-1]["reasons"][0]
    assert len(list((world.serving_dir / "feedback" / "drift").glob("*.json"))) == 2
