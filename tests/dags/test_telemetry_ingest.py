"""telemetry_ingest, run for real with dag.test() on a SQLite Airflow and the embedded default."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.settings import get_settings
from tests.features.test_validation import telemetry_frame


def _land(frame: pd.DataFrame, name: str) -> Path:
    landing = get_settings().landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(landing / name)
    return landing / name


def _run(dagbag, **conf):
    dag = dagbag.get_dag("telemetry_ingest")
    return dag.test(run_conf=conf or None)


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_landed_batches_flow_to_the_online_store_and_emit_the_asset(dagbag) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from features.store import feature_store, online_features

    _land(telemetry_frame(users=3, steps=36), "morning.parquet")
    _land(telemetry_frame(users=3, steps=36, start="2026-01-06"), "evening.parquet")
    run = _run(dagbag)
    assert str(run.state) == "success", _states(run)

    online = online_features(feature_store(), ["user-000", "user-001", "user-002"])
    assert len(online) == 3
    assert online.select_dtypes("number").notna().any(axis=None)
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == "prewarm://features/hourly")
            .count()
        )
    assert events >= 1


def test_a_rejected_batch_fails_the_run_after_the_good_batch_is_stored(dagbag) -> None:
    from features.ingest import accepted_telemetry

    _land(telemetry_frame(users=2, steps=24), "good.parquet")
    _land(telemetry_frame(users=2, steps=24).drop(columns=["app"]), "bad.parquet")
    run = _run(dagbag, max_bad_fraction=0.05)
    states = _states(run)
    assert str(run.state) == "failed"
    assert states["check_rejections"] == "failed"
    assert states["materialize"] == "success"
    assert len(accepted_telemetry()) == 48
    rejected = list((get_settings().ingest_dir / "rejected").iterdir())
    assert len(rejected) == 1
