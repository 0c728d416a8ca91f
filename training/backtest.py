"""Rolling-origin backtest of forecasters on an hourly panel (``prewarm backtest``).

Fold k (k = 1..K) forecasts the ``H`` hours from origin ``T - (K - k + 1)·H``, so the folds tile
the last K·H hours of the panel. Each forecaster is fitted anew per fold on ``panel.head(origin)``
and never sees anything after the origin. Metrics (see :mod:`training.metrics`) are computed per
series, resource and fold, then averaged over series and folds; ``mean`` averages the four
resources. The JSON of DESIGN.md section 4, with a few additions::

    {"horizon": H, "folds": K, "n_series": n, "origins": [ISO hour, ...],
     "region_persistence_top1": x | null,
     "models": {NAME: {"mase": {<resource>: x, ..., "mean": x}, "mase_median": {...},
                       "mase_excluded": {<resource>: count, ..., "of": n·K},
                       "smape": {...}, "pinball_p90": {...}, "coverage_p90": {...},
                       "region_top1": x | null, "fit_seconds": x, "predict_seconds": x,
                       "diagnostics": {...}  # only for models that report some}}}

``mase_excluded`` counts the (series, fold) pairs left out of MASE and the scaled pinball loss
per resource: their seasonal-naive scale is zero or undefined, or the fold has no actual value.
A figure is null where it is undefined (every pair excluded) or overflows to infinity (an
exploded forecast; see the ``ets`` diagnostics). ``fit_seconds`` and ``predict_seconds`` are the
wall time of ``fit`` and ``predict`` summed over the folds.
``region_top1`` is null when the panel has no location or the model forecasts no region;
``region_persistence_top1`` is the accuracy of "stays in the last known region", which the
``seasonal_naive`` model also reports as its ``region_top1``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.schema import RESOURCE_COLUMNS
from core.settings import Settings
from training import metrics
from training.baselines import AutoEts, LightGbm, SeasonalNaive, persistence_proba
from training.forecast import DAY, Forecast, Forecaster
from training.panel import Panel

Progress = Callable[[int, int], None]

BASELINES: dict[str, type] = {
    SeasonalNaive.name: SeasonalNaive,
    AutoEts.name: AutoEts,
    LightGbm.name: LightGbm,
}
MODEL_NAMES: tuple[str, ...] = (*BASELINES, "lstm")


def make_forecasters(names: list[str], settings: Settings | None = None) -> list[Forecaster]:
    """Forecasters by name: ``seasonal_naive``, ``ets``, ``lightgbm`` and ``lstm``.

    ``lstm`` is imported only when asked for (it pulls in torch). Raises ValueError for an
    unknown name and RuntimeError when ``training.lstm.LstmForecaster`` cannot be imported.
    """
    forecasters: list[Forecaster] = []
    for name in names:
        if name == "lstm":
            forecasters.append(_lstm_class()(settings=settings))
        elif name in BASELINES:
            forecasters.append(BASELINES[name](settings=settings))
        else:
            raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return forecasters


def _lstm_class() -> type:
    try:
        from training.lstm import LstmForecaster
    except ImportError as exc:
        raise RuntimeError(
            f"model 'lstm' needs training.lstm.LstmForecaster, which failed to import: {exc}"
        ) from exc
    return LstmForecaster


def fold_origins(n_hours: int, horizon: int, folds: int) -> list[int]:
    """Forecast origins (hour indices) of folds 1..K: ``T - (K - k + 1)·H``.

    Raises ValueError when the first fold would have less than a day and one hour of history
    (the seasonal-naive scale of MASE needs at least one lag-24 pair).
    """
    if horizon < 1 or folds < 1:
        raise ValueError(f"horizon and folds must be >= 1, got {horizon} and {folds}")
    origins = [n_hours - (folds - k + 1) * horizon for k in range(1, folds + 1)]
    if origins[0] < DAY + 1:
        raise ValueError(
            f"{folds} folds of {horizon} h leave {origins[0]} h of history before the first "
            f"origin in a panel of {n_hours} h; at least {DAY + 1} h are needed"
        )
    return origins


@dataclass
class _Fold:
    """What a fold is scored against: actuals after the origin and the naive scale before."""

    origin: int
    actual: np.ndarray  # (n, H, 4)
    actual_region: np.ndarray | None  # (n, H)
    scale: np.ndarray  # (n, 4)


def run_backtest(
    panel: Panel,
    horizon: int,
    folds: int,
    forecasters: list[Forecaster],
    progress: Progress | None = None,
) -> dict:
    """Evaluate ``forecasters`` by rolling origin; returns the JSON-ready result dict.

    ``progress(done, total)`` is called after each (model, fold) fit-and-forecast. A forecast
    of the wrong shape or with non-finite numbers raises ValueError naming the model.
    """
    names = [f.name for f in forecasters]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    origins = fold_origins(panel.n_hours, horizon, folds)
    fold_list = [_fold(panel, origin, horizon) for origin in origins]
    total, done = len(forecasters) * len(fold_list), 0
    models = {}
    for forecaster in forecasters:
        scores = _Scores()
        for fold in fold_list:
            forecast = scores.timed(forecaster, panel.head(fold.origin), horizon)
            _check(forecast, fold, forecaster.name)
            scores.add(fold, forecast)
            done += 1
            if progress is not None:
                progress(done, total)
        models[forecaster.name] = scores.summary(getattr(forecaster, "diagnostics", None))
    return {
        "horizon": horizon,
        "folds": folds,
        "n_series": panel.n_series,
        "origins": [panel.times[f.origin].isoformat() for f in fold_list],
        "region_persistence_top1": _persistence_top1(panel, fold_list, horizon),
        "models": models,
    }


def _fold(panel: Panel, origin: int, horizon: int) -> _Fold:
    stop = origin + horizon
    return _Fold(
        origin=origin,
        actual=panel.values[:, origin:stop].astype(np.float64),
        actual_region=None if panel.region is None else panel.region[:, origin:stop],
        scale=metrics.seasonal_scale(panel.values[:, :origin]),
    )


def _check(forecast: Forecast, fold: _Fold, name: str) -> None:
    """Refuse forecasts that would be scored silently wrong."""
    if forecast.p50.shape != fold.actual.shape:
        raise ValueError(
            f"{name}: forecast shape {forecast.p50.shape}, expected {fold.actual.shape}"
        )
    if not (np.isfinite(forecast.p50).all() and np.isfinite(forecast.p90).all()):
        raise ValueError(f"{name}: forecast holds NaN or infinite values")


class _Scores:
    """Per-fold metric arrays and timings of one model, and their summary."""

    def __init__(self) -> None:
        self.per_fold: dict[str, list[np.ndarray]] = {
            "mase": [], "smape": [], "pinball_p90": [], "coverage_p90": []
        }
        self.region_hits = self.region_hours = 0
        self.has_region = False
        self.fit_seconds = self.predict_seconds = 0.0

    def timed(self, forecaster: Forecaster, history: Panel, horizon: int) -> Forecast:
        start = time.perf_counter()
        forecaster.fit(history)
        fitted = time.perf_counter()
        forecast = forecaster.predict(history, horizon)
        self.fit_seconds += fitted - start
        self.predict_seconds += time.perf_counter() - fitted
        return forecast

    def add(self, fold: _Fold, forecast: Forecast) -> None:
        actual, scale = fold.actual, fold.scale
        self.per_fold["mase"].append(metrics.mase(actual, forecast.p50, scale))
        self.per_fold["smape"].append(metrics.smape(actual, forecast.p50))
        self.per_fold["pinball_p90"].append(metrics.scaled_pinball(actual, forecast.p90, scale))
        self.per_fold["coverage_p90"].append(metrics.coverage(actual, forecast.p90))
        if fold.actual_region is not None and forecast.region_proba is not None:
            hits, hours = metrics.region_hits(fold.actual_region, forecast.region_proba)
            self.region_hits += hits
            self.region_hours += hours
            self.has_region = True

    def summary(self, diagnostics: Callable[[], dict] | None) -> dict:
        stacked = {name: np.concatenate(arrays) for name, arrays in self.per_fold.items()}
        out: dict = {name: _by_resource(np.nanmean, values) for name, values in stacked.items()}
        out["mase_median"] = _by_resource(np.nanmedian, stacked["mase"])
        excluded = np.isnan(stacked["mase"]).sum(axis=0)
        out["mase_excluded"] = {
            **{r: int(c) for r, c in zip(RESOURCE_COLUMNS, excluded, strict=True)},
            "of": int(stacked["mase"].shape[0]),
        }
        out["region_top1"] = (
            self.region_hits / self.region_hours if self.has_region and self.region_hours else None
        )
        out["fit_seconds"] = round(self.fit_seconds, 3)
        out["predict_seconds"] = round(self.predict_seconds, 3)
        if diagnostics is not None:
            out["diagnostics"] = diagnostics()
        return out


def _by_resource(reduce: Callable, values: np.ndarray) -> dict[str, float | None]:
    """``reduce`` over (series, fold) rows per resource, plus the mean of the four; NaN -> None."""
    per_resource = [
        reduce(column[~np.isnan(column)]) if (~np.isnan(column)).any() else math.nan
        for column in values.T
    ]
    known = [v for v in per_resource if not math.isnan(v)]  # an infinite one makes mean None
    out = {r: _json_number(v) for r, v in zip(RESOURCE_COLUMNS, per_resource, strict=True)}
    out["mean"] = _json_number(float(np.mean(known))) if known else None
    return out


def _json_number(value: float) -> float | None:
    """A plain float, or None for NaN and overflowed (infinite) figures, which JSON lacks."""
    return float(value) if math.isfinite(value) else None


def _persistence_top1(panel: Panel, fold_list: list[_Fold], horizon: int) -> float | None:
    """Top-1 accuracy of "stays in the last known region" over all folds; None without location."""
    hits = hours = 0
    for fold in fold_list:
        proba = persistence_proba(panel.head(fold.origin), horizon)
        if proba is None or fold.actual_region is None:
            continue
        fold_hits, fold_hours = metrics.region_hits(fold.actual_region, proba)
        hits, hours = hits + fold_hits, hours + fold_hours
    return hits / hours if hours else None
