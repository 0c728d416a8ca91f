"""The baselines the LSTM must beat on the same windows: seasonal naive, AutoETS and LightGBM.

Each is a :class:`~training.forecast.Forecaster`; all read ``history.values`` (n, T, 4) and
forecast every series and resource for the hours after it. Forecasts are clipped at zero (no
resource is ever negative) and p90 is never below p50.

- :class:`SeasonalNaive`: the value at the same hour the previous day. Its p90 adds the 90th
  percentile of the series' own in-sample lag-24 errors. It also carries the region
  *persistence* reference ("the user stays where they are"): the region of the last hour with
  a known region, so an LSTM's region head can be compared with it.
- :class:`AutoEts`: statsforecast's AutoETS with a daily season on each series and resource,
  fitted on the latest ``backtest.ets_window_hours``; p90 is the upper end of its 80% interval.
- :class:`LightGbm`: one global LightGBM model over all series and resources on lag features,
  one direct model for all horizon steps (the step is a feature); quantile objectives give p50
  and p90. Series are divided by their training mean; a p50 below ``lightgbm_zero_below`` of
  that mean is set to exactly 0 (idle and powered-off hours are exact zeros, which the trees
  only approach to within 1e-6, and sMAPE scores 0/0 as perfect but 1e-6/0 as the worst).
  See :func:`lightgbm_features` for the features.

Missing hours (NaN) are filled for the models that need a gap-free series by
:func:`seasonal_fill`: the same hour on the latest earlier day with data, else the latest value,
else the first value, else zero for a series without any data.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import lightgbm as lgb
import numpy as np
from statsforecast.models import AutoETS

from core.regions import load_regions
from core.schema import RESOURCE_COLUMNS
from core.settings import BacktestSettings, Settings, get_settings
from training.forecast import DAY, Forecast
from training.metrics import P90
from training.panel import Panel

WEEK = 7 * DAY
ETS_LEVEL = 80  # a central 80% interval: its upper end is the 90th percentile


# ---------------------------------------------------------------------------- shared helpers


def seasonal_fill(values: np.ndarray, season: int = DAY) -> np.ndarray:
    """Fill NaN hours along axis 1 of ``values`` (n, T, ...), as the module docstring says."""
    filled = np.array(values, dtype=np.float64)
    for phase in range(min(season, filled.shape[1])):
        filled[:, phase::season] = _forward_fill(filled[:, phase::season])
    filled = _forward_fill(filled)
    filled = _forward_fill(filled[:, ::-1])[:, ::-1]  # leading gaps take the first value
    return np.nan_to_num(filled, nan=0.0)


def _forward_fill(values: np.ndarray) -> np.ndarray:
    """Carry the last non-NaN value forward along axis 1; leading NaNs stay NaN."""
    positions = np.arange(values.shape[1]).reshape((1, -1) + (1,) * (values.ndim - 2))
    last_seen = np.where(np.isnan(values), 0, positions)
    np.maximum.accumulate(last_seen, axis=1, out=last_seen)
    return np.take_along_axis(values, last_seen, axis=1)


def _require_history(history: Panel, hours: int, model: str) -> None:
    if history.n_hours < hours:
        raise ValueError(f"{model} needs at least {hours} hours of history, got {history.n_hours}")


def _finish(p50: np.ndarray, p90: np.ndarray, region_proba: np.ndarray | None = None) -> Forecast:
    """Non-negative forecasts with p90 >= p50."""
    p50 = np.maximum(p50, 0.0)
    return Forecast(p50=p50, p90=np.maximum(p90, p50), region_proba=region_proba)


def persistence_proba(
    history: Panel, horizon: int, n_regions: int | None = None
) -> np.ndarray | None:
    """One-hot region forecast "stays where they are": the last known region, every hour.

    Shape (n, horizon, n_regions), ``n_regions`` defaulting to the catalogue's size. A series
    whose region was never known gets the most common last-known region of the others. None
    when the panel has no region at all, or none of its hours has one.
    """
    if history.region is None or history.n_hours == 0:
        return None
    region = history.region.astype(np.float64)
    region[region < 0] = np.nan
    last = _forward_fill(region)[:, -1]
    known = ~np.isnan(last)
    if not known.any():
        return None
    last[~known] = np.bincount(last[known].astype(np.int64)).argmax()
    last = last.astype(np.int64)
    width = max(n_regions or len(load_regions()), int(last.max()) + 1)
    proba = np.zeros((history.n_series, horizon, width))
    proba[np.arange(history.n_series), :, last] = 1.0
    return proba


# ---------------------------------------------------------------------------- seasonal naive


class SeasonalNaive:
    """Same hour, previous day; p90 from the series' own in-sample errors."""

    name = "seasonal_naive"

    def __init__(self, settings: Settings | None = None) -> None:
        self._margin: np.ndarray | None = None

    def fit(self, history: Panel) -> None:
        """Learn each series' 90th percentile of in-sample lag-24 errors (0 where unknown)."""
        _require_history(history, DAY + 1, self.name)
        values = history.values.astype(np.float64)
        errors = values[:, DAY:] - values[:, :-DAY]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series: margin 0
            margin = np.nanquantile(errors, P90, axis=1)
        self._margin = np.maximum(np.nan_to_num(margin, nan=0.0), 0.0)

    def predict(self, history: Panel, horizon: int) -> Forecast:
        """Repeat the last day (gaps filled by :func:`seasonal_fill`) over the horizon."""
        if self._margin is None:
            raise RuntimeError("fit() must be called before predict()")
        last_day = seasonal_fill(history.values)[:, -DAY:]
        p50 = last_day[:, np.arange(horizon) % DAY]
        p90 = p50 + self._margin[:, np.newaxis, :]
        return _finish(p50, p90, persistence_proba(history, horizon))


# ---------------------------------------------------------------------------- AutoETS


class AutoEts:
    """statsforecast AutoETS (season 24) per series and resource.

    AutoETS is known to explode on a few series (very large forecasts, see DESIGN.md section 5),
    and its intervals more often than its means. Such forecasts are kept, not clipped, and counted
    in :meth:`diagnostics`: ``exploded_p50`` and ``exploded_p90`` count the series-resource
    forecasts whose maximum exceeds ``ets_explosion_factor`` times the series' history maximum.
    A series where AutoETS fails or returns non-finite numbers is forecast by the seasonal naive
    instead and counted as ``fallback``.
    """

    name = "ets"

    def __init__(self, settings: Settings | None = None) -> None:
        self.params: BacktestSettings = (settings or get_settings()).backtest
        self._models: list[AutoETS | None] = []
        self._naive = SeasonalNaive()
        self._counts = {"forecasts": 0, "fallback": 0, "exploded_p50": 0, "exploded_p90": 0}

    def fit(self, history: Panel) -> None:
        """Fit one AutoETS per series and resource on the latest window (gaps filled)."""
        _require_history(history, 2 * DAY, self.name)
        window = seasonal_fill(history.values)[:, -self.params.ets_window_hours :]
        series = [window[i, :, r] for i in range(history.n_series) for r in range(window.shape[2])]
        self._models = _map(_fit_ets, series, self.params.ets_workers)
        self._naive.fit(history)

    def predict(self, history: Panel, horizon: int) -> Forecast:
        """Forecast every fitted series; seasonal naive where AutoETS failed."""
        naive = self._naive.predict(history, horizon)
        n_resources = len(RESOURCE_COLUMNS)
        p50, p90 = naive.p50.copy(), naive.p90.copy()
        for k, model in enumerate(self._models):
            i, r = divmod(k, n_resources)
            forecast = _predict_ets(model, horizon)
            if forecast is None:
                self._counts["fallback"] += 1
            else:
                p50[i, :, r], p90[i, :, r] = forecast
        self._counts["forecasts"] += len(self._models)
        self._count_explosions(history, p50, p90)
        return _finish(p50, p90)

    def _count_explosions(self, history: Panel, p50: np.ndarray, p90: np.ndarray) -> None:
        factor = self.params.ets_explosion_factor
        for key, forecast in (("exploded_p50", p50), ("exploded_p90", p90)):
            self._counts[key] += int(exploded(history.values, forecast, factor).sum())

    def diagnostics(self) -> dict[str, int]:
        """Counts over all predict() calls: forecasts, naive fallbacks and explosions."""
        return dict(self._counts)


def exploded(history: np.ndarray, forecast: np.ndarray, factor: float) -> np.ndarray:
    """(n, R) flags: the forecast (n, H, R) exceeds ``factor`` times its history's maximum.

    Series whose history (n, T, R) never rose above zero are never flagged.
    """
    ceiling = np.nanmax(history, axis=1, initial=0.0)
    return (ceiling > 0) & (np.max(forecast, axis=1) > factor * ceiling)


def _fit_ets(y: np.ndarray) -> AutoETS | None:
    """Fit AutoETS with a daily season; None where it cannot be fitted."""
    try:
        return AutoETS(season_length=DAY).fit(y)
    except Exception:  # statsforecast raises assorted errors on degenerate series
        return None


def _predict_ets(model: AutoETS | None, horizon: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(p50, p90) of a fitted AutoETS; None where it failed or is not finite."""
    if model is None:
        return None
    try:
        out = model.predict(h=horizon, level=[ETS_LEVEL])
    except Exception:
        return None
    p50, p90 = np.asarray(out["mean"]), np.asarray(out[f"hi-{ETS_LEVEL}"])
    if not (np.isfinite(p50).all() and np.isfinite(p90).all()):
        return None
    return p50, p90


def _map(function, items: list, workers: int) -> list:
    """``[function(x) for x in items]``, in ``workers`` fresh processes when more than one."""
    if workers <= 1 or len(items) < 2:
        return [function(item) for item in items]
    chunk = max(1, len(items) // (4 * workers))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(function, items, chunksize=chunk))


# ---------------------------------------------------------------------------- LightGBM

LAGS = tuple(range(1, DAY + 1))
SAME_HOUR_DAYS = 7
FEATURE_NAMES: tuple[str, ...] = (
    "step",
    "hour_of_day",
    "day_of_week",
    "resource",
    "log_scale",
    *(f"lag_{k}" for k in LAGS),
    *(f"same_hour_{k}d" for k in range(1, SAME_HOUR_DAYS + 1)),
    "same_hour_mean",
    "same_hour_median",
    "same_hour_max",
    "same_hour_std",
    "same_hour_last_week",
    "mean_6h",
    "mean_24h",
    "std_24h",
    "max_24h",
    "mean_168h",
)
RESOURCE_FEATURE = FEATURE_NAMES.index("resource")


def lightgbm_features(
    scaled: np.ndarray,
    series: np.ndarray,
    origin: np.ndarray,
    step: np.ndarray,
    first_hour: int,
    first_weekday: int,
    resource: np.ndarray,
    log_scale: np.ndarray,
) -> np.ndarray:
    """Feature rows (N, len(FEATURE_NAMES)) for forecasting ``scaled[series, origin + step - 1]``.

    ``scaled`` (S, T) holds each series (one per user and resource) divided by its scale;
    ``origin`` is the number of hours known (the target's features use only hours before it),
    ``step`` 1..H. Features: the step; the target's hour of day and weekday (``first_hour`` and
    ``first_weekday`` are those of hour 0); the resource and the log of the series' scale; the
    last 24 hours before the origin; the target's hour on each of the last 7 days known (the
    first of them is the seasonal naive) with their mean, median, max and std, and a week
    before the target; means over the last 6, 24 and 168 hours, std and max over 24. Missing
    hours stay NaN, which LightGBM handles natively.
    """
    target = origin + step - 1
    days_back = (step - 1) // DAY + 1  # the first day back whose target hour is known
    weeks_back = (step - 1) // WEEK + 1
    lags = _gather(scaled, series, origin[:, None] - np.asarray(LAGS)[None, :])
    same_hour = _gather(
        scaled,
        series,
        target[:, None] - DAY * (days_back[:, None] + np.arange(SAME_HOUR_DAYS)[None, :]),
    )
    last_week = _gather(scaled, series, (target - WEEK * weeks_back)[:, None])[:, 0]
    clock = first_hour + target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # windows with no data give NaN
        columns = [
            step,
            clock % DAY,
            (first_weekday + clock // DAY) % 7,
            resource[series],
            log_scale[series],
            *lags.T,
            *same_hour.T,
            np.nanmean(same_hour, axis=1),
            np.nanmedian(same_hour, axis=1),
            np.nanmax(same_hour, axis=1),
            np.nanstd(same_hour, axis=1),
            last_week,
            np.nanmean(lags[:, :6], axis=1),
            np.nanmean(lags, axis=1),
            np.nanstd(lags, axis=1),
            np.nanmax(lags, axis=1),
            _window_mean(scaled, series, origin, WEEK),
        ]
    return np.column_stack(columns).astype(np.float32)


def _gather(values: np.ndarray, series: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """``values[series, hours]`` row-wise, NaN where an hour is before the start."""
    inside = hours >= 0
    out = values[series[:, None], np.where(inside, hours, 0)]
    return np.where(inside, out, np.nan)


def _window_mean(values: np.ndarray, series: np.ndarray, origin: np.ndarray, width: int):
    """Mean of the non-NaN values of ``values[series, origin - width : origin]``."""
    present = ~np.isnan(values)
    total = _cumulative(np.where(present, values, 0.0))
    count = _cumulative(present.astype(np.float64))
    start = np.maximum(origin - width, 0)
    n = count[series, origin] - count[series, start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total[series, origin] - total[series, start]) / n, np.nan)


def _cumulative(values: np.ndarray) -> np.ndarray:
    """Running sums along axis 1 with a leading 0: ``out[:, j]`` sums ``values[:, :j]``."""
    return np.concatenate([np.zeros((len(values), 1)), np.cumsum(values, axis=1)], axis=1)


class LightGbm:
    """A global LightGBM on lag features: one direct model per quantile for all steps.

    The model covers forecast steps 1..24, or up to the longest horizon asked for so far: a
    longer horizon makes :meth:`predict` first refit on the same history for the new steps.
    """

    name = "lightgbm"

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or get_settings()
        self.params: BacktestSettings = settings.backtest
        self.seed = settings.seed
        self.steps = DAY
        self._boosters: dict[float, lgb.Booster] = {}
        self._scale: np.ndarray | None = None

    def fit(self, history: Panel) -> None:
        """Train the p50 and p90 models on forecast origins from the latest training window."""
        _require_history(history, 2 * DAY, self.name)
        scaled, self._scale = self._scaled(history)
        series, origin, step = self._training_rows(scaled)
        features = self._features(history, scaled, series, origin, step)
        target = scaled[series, origin + step - 1]
        self._boosters = {
            quantile: self._train(features, target, quantile) for quantile in (0.5, P90)
        }

    def predict(self, history: Panel, horizon: int) -> Forecast:
        """Forecast every series and resource for steps 1..horizon from the history's end."""
        if not self._boosters or self._scale is None:
            raise RuntimeError("fit() must be called before predict()")
        if horizon > self.steps:
            self.steps = horizon
            self.fit(history)
        scaled, _ = self._scaled(history, self._scale)
        rows = scaled.shape[0]  # one per series and resource
        series = np.repeat(np.arange(rows), horizon)
        step = np.tile(np.arange(1, horizon + 1), rows)
        origin = np.full_like(step, history.n_hours)
        features = self._features(history, scaled, series, origin, step)
        shape = (history.n_series, len(RESOURCE_COLUMNS), horizon)
        forecast = {
            quantile: booster.predict(features, num_threads=self.params.lightgbm_threads)
            .reshape(shape)
            .transpose(0, 2, 1)  # (n, H, 4) in scaled units
            for quantile, booster in self._boosters.items()
        }
        p50 = np.where(forecast[0.5] < self.params.lightgbm_zero_below, 0.0, forecast[0.5])
        scale = self._scale.reshape(history.n_series, 1, len(RESOURCE_COLUMNS))
        return _finish(p50 * scale, forecast[P90] * scale)

    def _scaled(self, history: Panel, scale: np.ndarray | None = None):
        """Series as rows (user-major, resource-minor) divided by their training mean."""
        values = history.values.astype(np.float64).transpose(0, 2, 1).reshape(-1, history.n_hours)
        if scale is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                scale = np.nanmean(values, axis=1)
            scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        return values / scale[:, None], scale

    def _training_rows(self, scaled: np.ndarray):
        """(series, origin, step) of training examples whose target is known, sampled."""
        n_series, n_hours = scaled.shape
        first = max(DAY, n_hours - self.params.lightgbm_train_hours)
        origins = np.arange(n_hours - 1, first - 1, -self.params.lightgbm_origin_stride)[::-1]
        steps = np.arange(1, self.steps + 1)
        series, origin, step = (
            grid.ravel()
            for grid in np.meshgrid(np.arange(n_series), origins, steps, indexing="ij")
        )
        target = origin + step - 1
        keep = target < n_hours
        keep[keep] = ~np.isnan(scaled[series[keep], target[keep]])
        rows = np.flatnonzero(keep)
        if len(rows) > self.params.lightgbm_max_rows:
            rng = np.random.default_rng(self.seed)
            rows = np.sort(rng.choice(rows, self.params.lightgbm_max_rows, replace=False))
        return series[rows], origin[rows], step[rows]

    def _features(self, history: Panel, scaled, series, origin, step) -> np.ndarray:
        n_resources = len(RESOURCE_COLUMNS)
        return lightgbm_features(
            scaled,
            series,
            origin,
            step,
            first_hour=int(history.times[0].hour),
            first_weekday=int(history.times[0].dayofweek),
            resource=np.tile(np.arange(n_resources), history.n_series),
            log_scale=np.log10(self._scale),
        )

    def _train(self, features: np.ndarray, target: np.ndarray, quantile: float) -> lgb.Booster:
        params = {
            "objective": "quantile",
            "alpha": quantile,
            "learning_rate": self.params.lightgbm_learning_rate,
            "num_leaves": self.params.lightgbm_num_leaves,
            "min_child_samples": self.params.lightgbm_min_child_samples,
            "feature_fraction": 0.8,
            "num_threads": self.params.lightgbm_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }
        data = lgb.Dataset(
            features,
            target,
            feature_name=list(FEATURE_NAMES),
            categorical_feature=[RESOURCE_FEATURE],
            free_raw_data=True,
        )
        return lgb.train(params, data, num_boost_round=self.params.lightgbm_rounds)
