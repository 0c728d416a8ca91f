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


def test_a_nightly_run_registers_a_model_and_crowns_the_first_champion(
    dagbag, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simulation.world import simulate
    from training import registry

    for name, value in SMALL_LSTM.items():
        monkeypatch.setenv(f"PREWARM_LSTM__{name}", value)
    get_settings.cache_clear()
    telemetry = tmp_path / "telemetry"
    simulate(users=8, days=10, seed=1, out=telemetry)

    dag = dagbag.get_dag("nightly_retrain")
    run = dag.test(
        run_conf={"epochs": 3, "horizon": 12, "window_days": 10, "source": str(telemetry)}
    )
    assert str(run.state) == "success", _states(run)
    assert set(_states(run)) == {"build_dataset", "train", "backtest", "register", "gate"}

    client = registry.client()
    champion = registry.champion(client)
    assert champion is not None and str(champion.version) == "1"
    assert champion.tags["gate_decision"] == "promoted to champion"
    lineage = client.get_run(champion.run_id).data.tags
    assert lineage["data_source"] == str(telemetry)
    assert lineage["feature_service"] == "training"


def test_invalid_params_are_refused_before_anything_runs(dagbag) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    dag = dagbag.get_dag("nightly_retrain")
    with pytest.raises(ParamValidationError):
        dag.test(run_conf={"epochs": 0})
    assert not (get_settings().home / "training").exists()
