"""The pyfunc model: feature windows in, per-user profiles out, loaded back from the registry."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from core.regions import load_regions
from core.settings import get_settings
from tests.training.synthetic import SMALL, make_panel, noisy_daily_panel
from training import job, registry
from training.pyfunc import INPUT_COLUMNS, OUTPUT_COLUMNS, frame_from_panel, panel_from_frame


def _panel_with_regions(n: int = 6, days: int = 10):
    values = noisy_daily_panel(n=n, days=days, noise=0.2).values
    hours = values.shape[1]
    region = np.repeat(np.arange(n, dtype=np.int16)[:, None], hours, axis=1)
    region[0, (np.arange(hours) // 24) % 2 == 1] = 9  # user 0 commutes between two regions
    region[1, :5] = -1  # location unknown for a few hours
    return make_panel(values, region)


def test_frames_and_panels_convert_both_ways_and_gaps_stay_gaps() -> None:
    panel = _panel_with_regions()
    panel.values[2, 30:40] = np.nan
    frame = frame_from_panel(panel)
    assert list(frame.columns) == list(INPUT_COLUMNS)
    assert frame["region"].isna().sum() == 5
    frame = frame.dropna(subset=["cpu_cores"])  # hours without telemetry simply have no row
    back = panel_from_frame(frame)
    assert back.series_ids == panel.series_ids and back.times.equals(panel.times)
    np.testing.assert_array_equal(back.values, panel.values)
    np.testing.assert_array_equal(back.region[:, :30], panel.region[:, :30])
    assert back.static.equals(panel.static)


def test_an_input_without_resources_is_refused() -> None:
    frame = frame_from_panel(_panel_with_regions()).drop(columns=["ram_gb"])
    with pytest.raises(ValueError, match="ram_gb"):
        panel_from_frame(frame)


def test_the_champion_loads_from_the_registry_and_predicts_profiles() -> None:
    settings = get_settings()
    panel = _panel_with_regions()
    result = job.train_and_register(panel, horizon=12, epochs=2, **SMALL)
    client = registry.client()
    # What is tested here is loading and predicting, not the gate: make this version champion.
    client.set_registered_model_alias(settings.mlflow.model_name, "champion", result["version"])

    model = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.model_name}@champion")
    assert model.metadata.get_input_schema().input_names() == list(INPUT_COLUMNS)

    frame = frame_from_panel(panel.window(panel.n_hours - 60, panel.n_hours))
    newcomer = frame[frame["user_id"] == "s3"].tail(10).assign(user_id="new-user")
    profiles = model.predict(pd.concat([frame, newcomer], ignore_index=True))

    assert list(profiles.columns) == list(OUTPUT_COLUMNS)
    assert len(profiles) == 7 * 12
    steps = profiles.groupby("user_id")["step"].apply(list)
    assert all(s == list(range(1, 13)) for s in steps)
    for resource in ("cpu_cores", "ram_gb", "storage_iops", "network_mbps"):
        assert (profiles[f"{resource}_p90"] >= profiles[f"{resource}_p50"]).all()
        assert (profiles[f"{resource}_p50"] >= 0).all()
    assert profiles["region"].isin(load_regions().codes).all()
    assert profiles["region_probability"].between(0, 1).all()
    cold = profiles.groupby("user_id")["cold_start"].first()
    assert cold["new-user"] and not cold.drop("new-user").any()
    assert profiles["target_hour"].iloc[0] == panel.times[-1].tz_localize(None) + pd.Timedelta("1h")

    shorter = model.predict(frame, params={"horizon": 4})
    assert shorter["step"].max() == 4 and len(shorter) == 6 * 4
