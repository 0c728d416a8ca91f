"""Forecast-quality metrics of the backtest, per series and resource, NaN-aware.

All functions take arrays shaped (n, H, R) (series, hours, resources) and return (n, R): one
figure per series and resource, NaN where it is undefined. Hours where the actual value is
missing (NaN) are ignored everywhere. The backtest averages these figures over series and folds.

- **MASE**: the forecast MAE (p50 vs actual) divided by the in-sample MAE of the lag-24
  seasonal naive on the training data (:func:`seasonal_scale`). Where that scale is zero or
  undefined (a series constant or missing throughout training: common for GWA network), the
  ratio is undefined (NaN) and the backtest excludes it and counts the exclusions, rather than
  inventing a floor that would let a few flat series dominate the mean.
- **sMAPE**, in percent (0-200): mean of 200·|F-A| / (|F|+|A|), with 0/0 counted as 0 (a
  forecast of zero for an idle hour is exactly right).
- **Pinball loss at p90**, *scaled* like MASE: the mean quantile loss of the p90 forecast
  divided by the same seasonal-naive scale, so that the four resources (cores, GiB, IOPS,
  Mbit/s) can be averaged; the M5 competition's scaled pinball loss, with MASE's exclusions.
- **Coverage of p90**: the share of actual values at or below the p90 forecast (ideal 0.9).
- **Region top-1**: the share of hours with a known actual region where the most probable
  forecast region is that region.
"""

from __future__ import annotations

import numpy as np

from training.forecast import DAY

P90 = 0.9


def seasonal_scale(history: np.ndarray, lag: int = DAY) -> np.ndarray:
    """In-sample MAE of the lag-``lag`` seasonal naive on ``history`` (n, T, R) -> (n, R).

    Pairs with either value missing are skipped; NaN where no pair is left.
    """
    history = np.asarray(history, dtype=np.float64)
    errors = np.abs(history[:, lag:] - history[:, :-lag]) if history.shape[1] > lag else None
    if errors is None:
        return np.full((history.shape[0], history.shape[2]), np.nan)
    return _nanmean_over_hours(errors)


def mean_absolute_error(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """MAE over the hours with an actual value, (n, H, R) -> (n, R)."""
    return _nanmean_over_hours(np.abs(_f64(forecast) - _f64(actual)))


def mase(actual: np.ndarray, p50: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """MASE per series and resource; NaN where ``scale`` is not a positive finite number."""
    return _scaled(mean_absolute_error(actual, p50), scale)


def smape(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Symmetric MAPE in percent (0-200) per series and resource, with 0/0 taken as 0."""
    actual, forecast = _f64(actual), _f64(forecast)
    denominator = np.abs(actual) + np.abs(forecast)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(denominator > 0, 200.0 * np.abs(forecast - actual) / denominator, 0.0)
    ratio[np.isnan(actual)] = np.nan
    return _nanmean_over_hours(ratio)


def pinball(actual: np.ndarray, forecast: np.ndarray, quantile: float = P90) -> np.ndarray:
    """Mean pinball (quantile) loss of ``forecast`` as the ``quantile`` forecast, raw units."""
    diff = _f64(actual) - _f64(forecast)
    return _nanmean_over_hours(np.maximum(quantile * diff, (quantile - 1.0) * diff))


def scaled_pinball(
    actual: np.ndarray, p90: np.ndarray, scale: np.ndarray, quantile: float = P90
) -> np.ndarray:
    """Pinball loss of the p90 forecast divided by the seasonal-naive scale (as in MASE)."""
    return _scaled(pinball(actual, p90, quantile), scale)


def coverage(actual: np.ndarray, p90: np.ndarray) -> np.ndarray:
    """Share of the hours with an actual value where the actual is at or below ``p90``."""
    actual = _f64(actual)
    covered = (actual <= _f64(p90)).astype(np.float64)
    covered[np.isnan(actual)] = np.nan
    return _nanmean_over_hours(covered)


def region_hits(actual_region: np.ndarray, region_proba: np.ndarray) -> tuple[int, int]:
    """(hits, hours): top-1 region hits over the hours whose actual region is known (>= 0).

    ``actual_region`` is (n, H) of catalogue indices (-1 unknown); ``region_proba`` is
    (n, H, n_regions).
    """
    actual_region = np.asarray(actual_region)
    known = actual_region >= 0
    predicted = np.argmax(np.asarray(region_proba), axis=-1)
    return int(np.sum(predicted[known] == actual_region[known])), int(np.sum(known))


def _scaled(error: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``error / scale`` where the scale is positive and finite, NaN elsewhere."""
    scale = _f64(scale)
    usable = np.isfinite(scale) & (scale > 0)
    out = np.full(np.broadcast_shapes(error.shape, scale.shape), np.nan)
    np.divide(error, scale, out=out, where=usable)
    return out


def _nanmean_over_hours(values: np.ndarray) -> np.ndarray:
    """Mean over axis 1 ignoring NaN, NaN (without a warning) where every hour is NaN."""
    present = ~np.isnan(values)
    count = present.sum(axis=1)
    total = np.where(present, values, 0.0).sum(axis=1)
    out = np.full(total.shape, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _f64(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)
