"""The LSTM forecaster end to end on tiny synthetic panels (a few seconds of CPU per fit)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core.regions import load_regions
from training.forecast import Forecast, Forecaster
from training.job import calibration
from training.lstm import LstmForecaster
from training.panel import Panel

START = pd.Timestamp("2026-01-05 00:00", tz="UTC")  # a Monday
SMALL = dict(
    encoder_length=48,
    horizon=12,
    patch_hours=8,
    hidden_size=16,
    head_hidden_size=32,
    embedding_dim=4,
    batch_size=64,
    samples_per_epoch=512,
    max_epochs=3,
    validation_hours=24,
    seed=0,
)


def _panel(
    values: np.ndarray, region: np.ndarray | None = None, home: str | list[str] = "unknown"
) -> Panel:
    n, hours, _ = values.shape
    ids = tuple(f"user-{i:02d}" for i in range(n))
    static = pd.DataFrame({"role": "analyst", "home_region": home}, index=pd.Index(ids))
    times = pd.date_range(START, periods=hours, freq="h")
    return Panel(ids, times, values.astype(np.float32), region, static)


def _daily(n: int = 8, days: int = 16, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """Series with a strong daily cycle, each at its own level and phase."""
    rng = np.random.default_rng(seed)
    hours = np.arange(24 * days)
    level = rng.uniform(1, 10, size=(n, 1, 4))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 4))
    cycle = 1 + 0.8 * np.sin(2 * np.pi * hours[None, :, None] / 24 + phase)
    return level * cycle * (1 + noise * rng.standard_normal((n, len(hours), 4)))


def test_it_is_a_forecaster_with_shaped_non_crossing_non_negative_output():
    panel = _panel(_daily())
    model = LstmForecaster(**SMALL)
    assert isinstance(model, Forecaster) and model.name == "lstm"
    model.fit(panel)
    forecast = model.predict(panel, 12)
    assert isinstance(forecast, Forecast)
    assert forecast.p50.shape == forecast.p90.shape == (8, 12, 4)
    assert forecast.region_proba is None  # no location in the data
    assert np.all(forecast.p90 >= forecast.p50) and np.all(forecast.p50 >= 0)
    assert model.predict(panel, 5).p50.shape == (8, 5, 4)
    with pytest.raises(ValueError, match="horizon"):
        model.predict(panel, 13)


def test_predict_before_fit_is_refused():
    with pytest.raises(RuntimeError, match="fitted"):
        LstmForecaster(**SMALL).predict(_panel(_daily()), 12)


def test_same_seed_gives_identical_predictions_and_global_torch_state_is_restored():
    panel = _panel(_daily())
    global_state = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    forecasts = []
    for _ in range(2):
        model = LstmForecaster(**SMALL)
        model.fit(panel)
        forecasts.append(model.predict(panel, 12))
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == global_state
    np.testing.assert_array_equal(forecasts[0].p50, forecasts[1].p50)
    np.testing.assert_array_equal(forecasts[0].p90, forecasts[1].p90)


def test_learns_a_daily_cycle_far_better_than_a_constant():
    values = _daily(days=20)
    origin = values.shape[1] - 12
    history = _panel(values).head(origin)
    model = LstmForecaster(**SMALL)
    model.fit(history)
    actual = values[:, origin:]
    lstm_mae = np.mean(np.abs(model.predict(history, 12).p50 - actual))
    constant_mae = np.mean(np.abs(values[:, :origin].mean(axis=1, keepdims=True) - actual))
    assert lstm_mae < 0.4 * constant_mae


def test_nothing_after_the_history_reaches_fit_or_predict():
    values = _daily()
    origin = values.shape[1] - 12
    panel = _panel(values)

    def fit_and_predict() -> np.ndarray:
        model = LstmForecaster(**SMALL)
        model.fit(panel.head(origin))
        return model.predict(panel.head(origin), 12).p50

    before = fit_and_predict()
    values_in_panel = panel.values
    values_in_panel[:, origin:] = 1e6  # rewrite the future in the very array the history views
    np.testing.assert_array_equal(before, fit_and_predict())


def test_users_with_short_or_no_history_are_forecast_and_flagged():
    values = _daily()
    values[0, :-10] = np.nan  # appeared 10 hours ago
    values[1] = np.nan  # never seen
    values[2, :-40] = np.nan  # 40 hours < L = 48
    panel = _panel(values)
    model = LstmForecaster(**SMALL)
    model.fit(panel)
    forecast = model.predict(panel, 12)
    assert np.all(np.isfinite(forecast.p50)) and np.all(np.isfinite(forecast.p90))
    assert model.last_cold_start.tolist() == [True, True, True] + [False] * 5
    short = values[0, -10:]
    assert abs(forecast.p50[0].mean() - short.mean()) < short.std() + short.mean()


def test_tiny_forecasts_of_an_idle_user_snap_to_exactly_zero():
    values = _daily()
    values[0] = 0.0
    values[0, ::50] = 1.0  # rare blips of activity
    panel = _panel(values)
    longer = {**SMALL, "samples_per_epoch": 2048, "max_epochs": 4}
    forecasts = {}
    for snap in (0.0, 0.5):
        model = LstmForecaster(**longer, zero_snap=snap)
        model.fit(panel)
        forecasts[snap] = model.predict(panel, 12).p50
    assert forecasts[0.0][0].max() > 0.0
    assert np.all(forecasts[0.5][0] == 0.0)
    np.testing.assert_array_equal(forecasts[0.5][1:], forecasts[0.0][1:])  # busy users untouched


def test_new_users_at_predict_time_are_scaled_on_their_own_history():
    trained = _panel(_daily(n=4))
    model = LstmForecaster(**SMALL)
    model.fit(trained)
    bigger = _daily(n=4, seed=1) * 1000  # unseen users, three orders of magnitude larger
    forecast = model.predict(_panel(bigger), 12)
    ratio = forecast.p50.mean() / bigger[:, -48:].mean()
    assert 0.5 < ratio < 2


def test_save_and_load_round_trip(tmp_path):
    panel = _panel(_daily())
    model = LstmForecaster(**SMALL)
    model.fit(panel)
    model.save(tmp_path / "model")
    loaded = LstmForecaster.load(tmp_path / "model")
    np.testing.assert_array_equal(model.predict(panel, 12).p90, loaded.predict(panel, 12).p90)


def _weekly_travel(n: int, weeks: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Users at home except Tuesday 08:00 - Thursday 20:00 every week, in another region."""
    codes = load_regions().codes
    hours = np.arange(24 * 7 * weeks)
    hour_of_week = hours % 168  # START is a Monday 00:00
    away = (hour_of_week >= 24 + 8) & (hour_of_week < 72 + 20)
    home = np.arange(n)
    destination = home + n
    region = np.where(away[None, :], destination[:, None], home[:, None]).astype(np.int16)
    return region, away, [codes[i] for i in home]


def test_region_head_learns_weekly_travel_better_than_staying_put(tmp_path):
    n, weeks = 6, 7
    region, away, homes = _weekly_travel(n, weeks)
    values = _daily(n=n, days=7 * weeks)
    panel = _panel(values, region, homes)
    first_origin = 168 * (weeks - 1)  # the last week is for testing
    settings = {**SMALL, "encoder_length": 168, "horizon": 24, "patch_hours": 24}
    settings.update(samples_per_epoch=1024, max_epochs=4, validation_hours=48)
    model = LstmForecaster(**settings)
    model.fit(panel.head(first_origin))
    # One history entry per epoch, with the validation pinball and region accuracy.
    assert [e["epoch"] for e in model.epoch_history] == list(range(1, model.epochs_trained + 1))
    for entry in model.epoch_history:
        assert {"train_loss", "val_loss", "val_pinball", "val_region_top1"} <= set(entry)
        assert 0.0 <= entry["val_region_top1"] <= 1.0
    model_hits, stay_hits, travel_hours = 0, 0, 0
    for origin in range(first_origin, 168 * weeks - 24 + 1, 6):
        proba = model.predict(panel.head(origin), 24).region_proba
        assert proba.shape == (n, 24, len(load_regions()))
        np.testing.assert_allclose(proba.sum(axis=-1), 1.0, rtol=1e-5)
        actual = region[:, origin : origin + 24]
        travelling = away[origin : origin + 24][None, :].repeat(n, axis=0)
        model_hits += np.sum((proba.argmax(-1) == actual) & travelling)
        stay_hits += np.sum((region[:, origin - 1 : origin] == actual) & travelling)
        travel_hours += travelling.sum()
    model_top1, stay_top1 = model_hits / travel_hours, stay_hits / travel_hours
    assert stay_top1 < 0.85  # the origins often fall before a trip starts
    assert model_top1 > 0.95
    # The region calibration fitted in ``fit`` travels with the saved model.
    temperature, stay_bias = model.module.region_calibration
    assert temperature > 0 and (temperature, stay_bias) != (1.0, 0.0)
    logged = calibration(model)  # what the MLflow run of a retraining records
    assert logged["calibration_region_temperature"] == pytest.approx(temperature)
    assert logged["calibration_region_stay_bias"] == pytest.approx(stay_bias)
    loaded = LstmForecaster.load(model.save(tmp_path / "model"))
    assert loaded.module.region_calibration == pytest.approx((temperature, stay_bias))
    history = panel.head(first_origin)
    np.testing.assert_array_equal(
        model.predict(history, 24).region_proba, loaded.predict(history, 24).region_proba
    )
