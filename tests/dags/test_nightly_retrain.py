"""nightly_retrain, run for real with dag.test() on a SQLite Airflow, MLflow and a small world."""

from __future__ import annotations

import pytest

from core.settings import get_settings

# A small, fast LSTM: the DAG reads it from the settings, as a deployment would.
SMALL_LSTM = {
    "ENCODER_LENGTH": "48",
    "HIDDEN_SIZE": "16",
    "HEAD_HIDDEN_SIZE": "32",
    "EMBEDDING_DIM": "4",
    "BATCH_SIZE": "64",
    "SAMPLES_PER_EPOCH": "512",
    "VALIDATION_HOURS": "24",
}


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_it_runs_nightly_and_on_drift(dagbag) -> None:
    from airflow.sdk import AssetOrTimeSchedule

    dag = dagbag.get_dag("nightly_retrain")
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert dag.timetable.timetable.expression == "0 2 * * *"
    assert "prewarm://feedback/drift" in str(dag.timetable.asset_condition)
    assert set(dag.params) == {"epochs", "horizon", "window_days", "source"}


def _stock_the_feature_store(users: int, days: int, seed: int) -> None:
    """Write a simulated world's hourly features and profiles to this home's offline store."""
    from features.aggregate import hourly_user_features, user_profiles
    from features.store import apply_definitions, feature_store, write_offline
    from simulation.world import World, WorldConfig

    telemetry = World(WorldConfig(users=users, days=days, seed=seed)).telemetry()
    apply_definitions(feature_store())
    write_offline(
        {"user_hourly": hourly_user_features(telemetry), "user_profile": user_profiles(telemetry)}
    )


def test_nightly_runs_crown_the_first_champion_and_keep_it_from_a_worse_model(
    dagbag, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import registry

    for name, value in SMALL_LSTM.items():
        monkeypatch.setenv(f"PREWARM_LSTM__{name}", value)
    get_settings.cache_clear()
    _stock_the_feature_store(users=8, days=10, seed=1)
    dag = dagbag.get_dag("nightly_retrain")
    conf = {"horizon": 12, "window_days": 10, "source": ""}  # "": the Feast offline store

    first = dag.test(run_conf={**conf, "epochs": 3})
    assert str(first.state) == "success", _states(first)
    assert set(_states(first)) == {"build_dataset", "train", "backtest", "register", "gate"}
    client = registry.client()
    champion = registry.champion(client)
    assert champion is not None and str(champion.version) == "1"
    assert champion.tags["gate_decision"] == "promoted to champion"
    run = client.get_run(champion.run_id)
    assert run.data.tags["feature_service"] == "training"
    assert run.data.tags["data_source"] == f"feast:{get_settings().feast.project}/training"
    epochs = int(run.data.metrics["epochs_trained"])
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == epochs

    # A deliberately worse model: one epoch at a learning rate that barely moves the weights.
    monkeypatch.setenv("PREWARM_LSTM__LEARNING_RATE", "1e-7")
    get_settings.cache_clear()
    second = dag.test(run_conf={**conf, "epochs": 1})
    assert str(second.state) == "success", _states(second)

    name = get_settings().mlflow.model_name
    assert str(registry.champion(client).version) == "1"
    assert str(client.get_model_version_by_alias(name, registry.CHALLENGER).version) == "2"
    worse = client.get_model_version(name, "2")
    assert worse.tags["gate_decision"] == "kept as challenger"
    assert "champion v1" in worse.tags["gate_reason"]
    assert worse.description.startswith("Promotion gate: kept as challenger.")
    assert float(worse.tags[registry.SCORE_TAG]) > float(champion.tags[registry.SCORE_TAG])


def test_invalid_params_are_refused_before_anything_runs(dagbag) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    dag = dagbag.get_dag("nightly_retrain")
    with pytest.raises(ParamValidationError):
        dag.test(run_conf={"epochs": 0})
    assert not (get_settings().home / "training").exists()
