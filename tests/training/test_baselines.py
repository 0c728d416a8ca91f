"""The baseline forecasters: seasonal naive (with region persistence), AutoETS and LightGBM."""

from __future__ import annotations

import numpy as np
import pytest

from core.settings import Settings
from tests.training.synthetic import daily_pattern, make_panel, noisy_daily_panel
from training.baselines import (
    FEATURE_NAMES,
    AutoEts,
    LightGbm,
    SeasonalNaive,
    exploded,
    lightgbm_features,
    persistence_proba,
    seasonal_fill,
)
from training.forecast import Forecaster

FAST = {
    "ets_workers": 1,
    "ets_window_hours": 120,
    "lightgbm_rounds": 40,
    "lightgbm_max_rows": 20_000,
    "lightgbm_threads": 1,
}


def fast_settings(**backtest: object) -> Settings:
    return Settings(backtest={**FAST, **backtest})


def test_seasonal_fill_takes_the_same_hour_of_an_earlier_day_then_neighbours() -> None:
    values = np.array([1.0, 2.0, np.nan, 4.0, np.nan, np.nan]).reshape(1, 6, 1)
    # season 2: hour 2 <- hour 0; hour 4 <- hour 2 (filled); hour 5 <- hour 3
    np.testing.assert_array_equal(seasonal_fill(values, season=2).ravel(), [1, 2, 1, 4, 1, 4])
    leading = np.array([np.nan, np.nan, 3.0, np.nan]).reshape(1, 4, 1)
    np.testing.assert_array_equal(seasonal_fill(leading, season=3).ravel(), [3, 3, 3, 3])
    assert (seasonal_fill(np.full((1, 4, 1), np.nan)) == 0).all()


def test_seasonal_naive_repeats_the_last_day() -> None:
    values = daily_pattern(n=3, days=5)
    history = make_panel(values[:, : 4 * 24])
    model = SeasonalNaive()
    model.fit(history)
    forecast = model.predict(history, horizon=30)
    np.testing.assert_allclose(forecast.p50, values[:, 72 : 72 + 30], rtol=1e-6)
    assert (forecast.p90 >= forecast.p50).all()
    assert forecast.region_proba is None  # the panel has no location


def test_seasonal_naive_p90_adds_the_in_sample_error_quantile() -> None:
    history = noisy_daily_panel(n=4, days=10, noise=0.3)
    model = SeasonalNaive()
    model.fit(history)
    forecast = model.predict(history, horizon=24)
    margin = forecast.p90 - forecast.p50
    assert (margin > 0).all()
    assert np.ptp(margin, axis=1).max() < 1e-5  # one margin per series and resource


def test_persistence_forecasts_the_last_known_region() -> None:
    region = np.array([[3, 3, 5, -1], [-1, -1, -1, -1], [1, 5, 5, -1]], dtype=np.int16)
    history = make_panel(np.ones((3, 4, 4)), region=region)
    proba = persistence_proba(history, horizon=2, n_regions=8)
    assert proba.shape == (3, 2, 8)
    np.testing.assert_array_equal(proba.argmax(-1), [[5, 5], [5, 5], [5, 5]])  # s1: the mode
    np.testing.assert_array_equal(proba.sum(-1), 1.0)
    assert persistence_proba(make_panel(np.ones((3, 4, 4))), horizon=2) is None


@pytest.mark.parametrize("model_class", [SeasonalNaive, AutoEts, LightGbm])
def test_baselines_are_forecasters_with_non_negative_ordered_quantiles(model_class) -> None:
    model = model_class(settings=fast_settings())
    assert isinstance(model, Forecaster)
    history = noisy_daily_panel(n=3, days=14, noise=0.2)
    model.fit(history)
    forecast = model.predict(history, horizon=24)
    assert forecast.p50.shape == forecast.p90.shape == (3, 24, 4)
    assert np.isfinite(forecast.p50).all() and (forecast.p50 >= 0).all()
    assert (forecast.p90 >= forecast.p50).all()


@pytest.mark.parametrize("model_class", [AutoEts, LightGbm])
def test_models_learn_the_daily_cycle(model_class) -> None:
    values = daily_pattern(n=3, days=15)
    history = make_panel(values[:, : 14 * 24])
    model = model_class(settings=fast_settings())
    model.fit(history)
    forecast = model.predict(history, horizon=24)
    actual = values[:, 14 * 24 :]
    relative_error = np.abs(forecast.p50 - actual).mean() / actual.mean()
    assert relative_error < 0.1


def test_ets_counts_forecasts_and_keeps_within_sane_bounds_on_clean_data() -> None:
    model = AutoEts(settings=fast_settings())
    history = noisy_daily_panel(n=2, days=10, noise=0.1)
    model.fit(history)
    model.predict(history, horizon=24)
    assert model.diagnostics() == {
        "forecasts": 8, "fallback": 0, "exploded_p50": 0, "exploded_p90": 0
    }


def test_explosions_are_forecasts_far_above_the_history_maximum() -> None:
    history = np.array([[1.0, 4.0, np.nan], [0.0, 0.0, 0.0], [2.0, 1.0, 2.0]]).reshape(3, 3, 1)
    forecast = np.array([[30.0, 41.0], [5.0, 5.0], [3.0, 19.0]]).reshape(3, 2, 1)
    # s0: 41 > 10·4; s1: never above zero, not judged; s2: 19 <= 10·2
    assert exploded(history, forecast, factor=10.0).ravel().tolist() == [True, False, False]


def test_ets_in_worker_processes_matches_the_serial_fit() -> None:
    history = noisy_daily_panel(n=2, days=8, noise=0.1)
    forecasts = []
    for workers in (1, 2):
        model = AutoEts(settings=fast_settings(ets_workers=workers))
        model.fit(history)
        forecasts.append(model.predict(history, horizon=12))
    np.testing.assert_allclose(forecasts[0].p50, forecasts[1].p50)
    np.testing.assert_allclose(forecasts[0].p90, forecasts[1].p90)


def test_lightgbm_is_deterministic() -> None:
    history = noisy_daily_panel(n=3, days=14, noise=0.3)
    runs = []
    for _ in range(2):
        model = LightGbm(settings=fast_settings())
        model.fit(history)
        runs.append(model.predict(history, horizon=24))
    np.testing.assert_array_equal(runs[0].p50, runs[1].p50)
    np.testing.assert_array_equal(runs[0].p90, runs[1].p90)


def test_lightgbm_extends_its_steps_for_a_longer_horizon() -> None:
    values = daily_pattern(n=2, days=15)
    history = make_panel(values[:, : 13 * 24])
    model = LightGbm(settings=fast_settings())
    model.fit(history)
    forecast = model.predict(history, horizon=48)
    assert model.steps == 48
    actual = values[:, 13 * 24 :]
    assert np.abs(forecast.p50[:, 24:] - actual[:, 24:]).mean() / actual.mean() < 0.1


def test_lightgbm_features_use_only_hours_before_the_origin() -> None:
    hours = 24 * 10
    scaled = np.arange(hours, dtype=np.float64)[None, :]  # value = hour index
    origin, step = np.array([200, 200]), np.array([1, 24])
    features = lightgbm_features(
        scaled,
        np.array([0, 0]),
        origin,
        step,
        first_hour=0,
        first_weekday=0,
        resource=np.zeros(1),
        log_scale=np.zeros(1),
    )
    assert np.nanmax(features[:, 5:]) <= 199  # every value feature is an hour before 200
    names = list(FEATURE_NAMES)
    assert features[0, names.index("lag_1")] == 199
    assert features[0, names.index("same_hour_1d")] == 200 - 24  # target hour 200, a day back
    assert features[1, names.index("same_hour_1d")] == 223 - 24  # target hour 223
    assert features[1, names.index("hour_of_day")] == 223 % 24
