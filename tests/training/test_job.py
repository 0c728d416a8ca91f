"""The training job end to end on a SQLite MLflow: run, lineage, registration and the gate."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from core.settings import get_settings
from tests.training.synthetic import SMALL, make_panel, noisy_daily_panel
from training import job, registry

HORIZON = 12


@pytest.fixture
def panel():
    """Daily cycles under heavy noise: learnable, and hard for "same hour yesterday"."""
    return noisy_daily_panel(n=8, days=14, noise=0.3, seed=3)


def test_saved_panels_round_trip(panel, tmp_path) -> None:
    loaded = job.load_panel(job.save_panel(panel, tmp_path / "p.npz"))
    assert loaded.series_ids == panel.series_ids
    assert loaded.times.equals(panel.times)
    np.testing.assert_array_equal(loaded.values, panel.values)
    assert loaded.static.equals(panel.static)
    assert job.data_hash(loaded) == job.data_hash(panel)


def test_the_data_window_keeps_the_latest_days(panel) -> None:
    dataset = job.build_dataset(panel, window_days=5)
    assert dataset["n_hours"] == 5 * 24
    assert dataset["window_end"] == (panel.times[-1] + np.timedelta64(1, "h")).isoformat()
    assert job.load_panel(dataset["path"]).times[0] == panel.times[-5 * 24]


def test_first_model_becomes_champion_and_a_worse_one_stays_challenger(panel) -> None:
    settings = get_settings()
    first = job.train_and_register(panel, horizon=HORIZON, epochs=3, **SMALL)
    assert str(first["version"]) == "1" and first["promoted"], first
    assert first["scores"]["challenger"] < first["scores"]["seasonal_naive"]

    client = registry.client()
    name = settings.mlflow.model_name
    assert str(registry.champion(client).version) == "1"

    run = client.get_run(first["run_id"])
    assert run.data.params["horizon"] == str(HORIZON)
    assert run.data.params["lstm.max_epochs"] == "3"
    expected = {"holdout_mase_mean", "holdout_mase_cpu_cores", "holdout_seasonal_naive_mase_mean"}
    assert expected <= set(run.data.metrics)
    assert run.data.tags["feature_service"] == "none"  # a panel given, not read through Feast
    assert run.data.tags["data_hash"] == job.data_hash(panel)
    assert run.data.tags["data_window_start"] == panel.times[0].isoformat()
    assert run.data.tags["git_commit"] == job.git_commit() != ""
    spreads = {f"calibration_spread_q{q:g}" for q in settings.lstm.quantiles if q != 0.5}
    assert spreads <= set(run.data.metrics)
    assert all(run.data.metrics[name] > 0 for name in spreads)
    assert "calibration_region_temperature" not in run.data.metrics  # no regions in this panel
    epochs = int(run.data.metrics["epochs_trained"])
    assert epochs >= 1
    for metric in ("train_loss", "val_loss", "val_pinball"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert [point.step for point in history] == list(range(1, epochs + 1)), metric
        assert all(np.isfinite(point.value) for point in history)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/forecast_vs_actual.png", "plots/calibration.png"}
    requirements = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="model/requirements.txt"
    )
    assert {"torch", "pytorch-lightning", "prewarm"} <= {
        line.split("==")[0] for line in Path(requirements).read_text().split()
    }
    table_file = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="holdout.json"
    )
    table = json.loads(Path(table_file).read_text())
    assert table["challenger"]["mase_mean"] == pytest.approx(first["scores"]["challenger"])

    crippled = job.train_and_register(
        panel, horizon=HORIZON, epochs=1, **{**SMALL, "learning_rate": 1e-7}
    )
    assert str(crippled["version"]) == "2" and not crippled["promoted"], crippled
    # The champion was re-scored on this run's holdout: the same panel gives the same score.
    assert crippled["scores"]["champion"] == pytest.approx(first["scores"]["challenger"])
    assert str(registry.champion(client).version) == "1"
    version = client.get_model_version(name, "2")
    assert version.tags["gate_decision"] == "kept as challenger"
    assert "champion v1" in version.tags["gate_reason"]
    assert version.tags["gate_reason"] == crippled["reason"]
    assert str(client.get_model_version_by_alias(name, registry.CHALLENGER).version) == "2"


def test_the_champion_is_scored_on_the_new_holdout_not_its_own(panel) -> None:
    first = job.train_and_register(panel, horizon=HORIZON, epochs=3, **SMALL)
    assert first["promoted"], first
    newer = make_panel(noisy_daily_panel(n=8, days=14, noise=0.3, seed=3).values * 1.5 + 1.0)
    dataset = job.build_dataset(newer)
    trained = job.train(dataset, horizon=HORIZON, epochs=1, **SMALL)
    evaluation = job.evaluate(dataset, trained)
    champion = evaluation["champion"]
    assert str(champion["version"]) == "1" and champion["source"] == "this holdout"
    assert champion["mase_mean"] != pytest.approx(first["scores"]["challenger"])


def test_too_short_a_history_for_the_holdout_is_refused() -> None:
    dataset = job.build_dataset(noisy_daily_panel(n=2, days=2))
    with pytest.raises(ValueError, match="too little history"):
        job.train(dataset, horizon=24, epochs=1, **SMALL)


def test_the_dataset_is_read_through_the_training_feature_service(tmp_path) -> None:
    from features.aggregate import hourly_user_features, user_profiles
    from features.store import apply_definitions, feature_store, write_offline
    from simulation.world import World, WorldConfig

    telemetry = World(WorldConfig(users=3, days=3, seed=4)).telemetry()
    apply_definitions(feature_store())
    hourly = hourly_user_features(telemetry)
    write_offline({"user_hourly": hourly, "user_profile": user_profiles(telemetry)})
    end = hourly["event_timestamp"].max() - np.timedelta64(5, "h")

    dataset = job.build_dataset(window_days=2, end=end)

    assert dataset["feature_service"] == "training"
    assert dataset["source"] == f"feast:{get_settings().feast.project}/training"
    assert (dataset["n_series"], dataset["n_hours"]) == (3, 48)
    assert dataset["window_end"] == end.isoformat()
    assert job._lineage(dataset)["feature_service"] == "training"


def test_an_empty_feature_store_is_refused() -> None:
    with pytest.raises(ValueError, match="no feature service 'training'"):
        job.build_dataset()
