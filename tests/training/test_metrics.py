"""Backtest metrics on tiny arrays whose values are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training import metrics


def cube(*hours: float) -> np.ndarray:
    """One series, one resource: shape (1, H, 1)."""
    return np.asarray(hours, dtype=np.float64).reshape(1, -1, 1)


def test_seasonal_scale_is_the_in_sample_mae_of_the_lagged_naive() -> None:
    history = cube(1, 2, 4, 6, 10)  # lag-2 errors: |4-1|, |6-2|, |10-4| -> mean 13/3
    assert metrics.seasonal_scale(history, lag=2)[0, 0] == pytest.approx(13 / 3)


def test_seasonal_scale_skips_missing_pairs_and_is_nan_without_any() -> None:
    history = cube(1, np.nan, 4, 6, 10)  # pairs (1,4) and (4,10) only -> (3 + 6) / 2
    assert metrics.seasonal_scale(history, lag=2)[0, 0] == pytest.approx(4.5)
    assert np.isnan(metrics.seasonal_scale(cube(1, 2), lag=2)[0, 0])  # too short
    assert np.isnan(metrics.seasonal_scale(cube(np.nan, 1, 3, np.nan), lag=2)[0, 0])


def test_mase_divides_the_forecast_mae_by_the_scale() -> None:
    actual, forecast = cube(10, 20, np.nan), cube(12, 17, 99)  # MAE over known hours: 2.5
    assert metrics.mase(actual, forecast, np.array([[5.0]]))[0, 0] == pytest.approx(0.5)


@pytest.mark.parametrize("scale", [0.0, np.nan])
def test_mase_is_undefined_for_a_zero_or_unknown_scale(scale: float) -> None:
    assert np.isnan(metrics.mase(cube(1, 2), cube(1, 3), np.array([[scale]]))[0, 0])


def test_smape_in_percent_counts_zero_over_zero_as_exact() -> None:
    # hours: |3-1|/(3+1)=0.5 -> 100; 0/0 -> 0; |0-2|/2 -> 200; NaN actual ignored.
    value = metrics.smape(cube(1, 0, 2, np.nan), cube(3, 0, 0, 5))[0, 0]
    assert value == pytest.approx((100 + 0 + 200) / 3)


def test_pinball_weighs_under_forecasts_by_q_and_over_forecasts_by_one_minus_q() -> None:
    # under by 2 -> 0.9·2 = 1.8; over by 2 -> 0.1·2 = 0.2; exact -> 0
    assert metrics.pinball(cube(10, 8, 5), cube(8, 10, 5))[0, 0] == pytest.approx(2.0 / 3)


def test_scaled_pinball_uses_the_mase_scale() -> None:
    value = metrics.scaled_pinball(cube(10), cube(8), np.array([[0.9]]))[0, 0]
    assert value == pytest.approx(1.8 / 0.9)
    assert np.isnan(metrics.scaled_pinball(cube(10), cube(8), np.array([[0.0]]))[0, 0])


def test_coverage_is_the_share_of_actuals_at_or_below_p90() -> None:
    assert metrics.coverage(cube(1, 2, 3, 4, np.nan), cube(1, 1, 5, 5, 0))[0, 0] == 0.75


def test_metrics_are_per_series_and_resource() -> None:
    actual = np.zeros((2, 3, 4))
    forecast = np.zeros((2, 3, 4))
    forecast[1, :, 2] = 3.0
    mae = metrics.mean_absolute_error(actual, forecast)
    assert mae.shape == (2, 4)
    assert mae[1, 2] == 3.0 and mae.sum() == 3.0


def test_region_hits_count_top1_over_hours_with_a_known_region() -> None:
    actual = np.array([[0, 1, -1, 2]])
    proba = np.array([[[0.7, 0.3, 0.0], [0.6, 0.4, 0.0], [0.0, 0.0, 1.0], [0.1, 0.2, 0.7]]])
    assert metrics.region_hits(actual, proba) == (2, 3)
