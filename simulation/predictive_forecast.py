"""The predictive policy's forecasts: an hourly panel of what monitoring saw, and the LSTM on it.

The panel is built from the evaluation's observations only (``Observed``: telemetry recorded
before the current step), hour by hour as each hour completes, with the conventions of
``training.panel`` (hour starts, hourly means of every telemetry row, the region nearest to the
last position fix of the hour, -1 where none). The model is the project's LSTM
(``training.lstm.LstmForecaster``, the code ``nightly_retrain`` trains), fitted on the training
range, with the small configuration of ``settings.evaluation`` so that it trains in seconds.

The LSTM forecasts hourly means; allocations must cover five-minute demand. Each user's
``peak factor`` (per allocated resource: the median, over their active hours, of the hour's
``allocation_quantile`` of active demand over its mean) turns an hourly forecast into a forecast
of the hour's peak, learnt from the same history, compared with the user's recent
``active_peak`` to tell busy hours from idle ones. How much an active user gets is their
:class:`SessionEnvelope`: the forecast says when a user will need capacity better than it says
how much within an interval.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.regions import RegionCatalogue
from core.schema import RESOURCE_COLUMNS
from core.settings import Settings
from simulation.eval_policy import (
    OTHER_RESOURCES,
    RESOURCES,
    Observed,
    PolicyContext,
    active_quantile,
)
from training.forecast import Forecast
from training.lstm import LstmForecaster
from training.panel import Panel

PANEL_ORDER = tuple(RESOURCE_COLUMNS.index(name) for name in (*RESOURCES, *OTHER_RESOURCES))
MAX_PEAK_FACTOR = 10.0


@dataclass
class HourlyPanel:
    """Every user's hourly means and regions, filled in as hours complete (NaN / -1 before)."""

    context: PolicyContext
    values: np.ndarray  # (users, hours, 4) in RESOURCE_COLUMNS order
    region: np.ndarray  # (users, hours) int16 catalogue index, -1 unknown
    known_hours: int = 0

    @classmethod
    def empty(cls, context: PolicyContext, total_steps: int) -> HourlyPanel:
        """A panel over the whole world's hours, nothing known yet."""
        hours = total_steps // context.steps_per_hour
        users = len(context.user_ids)
        values = np.full((users, hours, len(RESOURCE_COLUMNS)), np.nan, np.float32)
        return cls(context, values, np.full((users, hours), -1, np.int16))

    def update(self, observed: Observed, catalogue: RegionCatalogue) -> None:
        """Fill in every hour that has completed before ``observed.step``."""
        per_hour = self.context.steps_per_hour
        done = min(observed.step // per_hour, self.values.shape[1])
        if done <= self.known_hours:
            return
        steps = slice(self.known_hours * per_hour, done * per_hour)
        hours = done - self.known_hours
        users = self.values.shape[0]
        demand = np.concatenate(
            [observed.demand[:, steps], observed.other_demand[:, steps]], axis=-1
        ).reshape(users, hours, per_hour, -1)
        means = demand.mean(axis=2)
        self.values[:, self.known_hours : done][..., list(PANEL_ORDER)] = means
        lat = observed.lat[:, steps].reshape(users, hours, per_hour)
        lon = observed.lon[:, steps].reshape(users, hours, per_hour)
        self.region[:, self.known_hours : done] = _last_region(lat, lon, catalogue)
        self.known_hours = done

    def panel(self) -> Panel:
        """The known hours as a ``training.panel.Panel`` (what the forecaster reads)."""
        context = self.context
        times = pd.date_range(context.start, periods=self.known_hours, freq="h")
        static = pd.DataFrame(
            {
                "role": list(context.roles),
                "home_region": np.asarray(context.catalogue.codes)[context.home_region],
            },
            index=pd.Index(list(context.user_ids), name="series_id"),
        )
        return Panel(
            series_ids=tuple(context.user_ids),
            times=times,
            values=self.values[:, : self.known_hours],
            region=self.region[:, : self.known_hours],
            static=static,
        )


def _last_region(lat: np.ndarray, lon: np.ndarray, catalogue: RegionCatalogue) -> np.ndarray:
    """(users, hours) region nearest to each hour's last position fix; -1 without a fix."""
    fixed = np.isfinite(lat) & np.isfinite(lon)
    last = lat.shape[2] - 1 - np.argmax(fixed[..., ::-1], axis=2)
    pick = last[..., None]
    last_lat = np.take_along_axis(lat, pick, axis=2)[..., 0]
    last_lon = np.take_along_axis(lon, pick, axis=2)[..., 0]
    any_fix = fixed.any(axis=2)
    out = np.full(lat.shape[:2], -1, np.int16)
    if any_fix.any():
        out[any_fix] = catalogue.nearest(last_lat[any_fix], last_lon[any_fix])
    return out


def peak_factors(observed: Observed, settings: Settings, steps_per_hour: int) -> np.ndarray:
    """(users, len(RESOURCES)) median ratio of an hour's active-demand quantile to its mean.

    1 for users (and resources) without an active hour: the forecast is then used as it is.
    """
    users, steps = observed.demand.shape[:2]
    hours = steps // steps_per_hour
    demand = observed.demand[:, : hours * steps_per_hour].reshape(users, hours, steps_per_hour, -1)
    active = observed.session_active[:, : hours * steps_per_hour].reshape(
        users, hours, steps_per_hour
    )
    mean = demand.mean(axis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # hours without activity: NaN
        peak = np.nanquantile(
            np.where(active[..., None], demand, np.nan),
            settings.evaluation.allocation_quantile,
            axis=2,
        )
        ratio = np.where((mean > 0) & active.any(axis=2)[..., None], peak / mean, np.nan)
        factor = np.nanmedian(ratio, axis=1)
    return np.clip(np.nan_to_num(factor, nan=1.0), 1.0, MAX_PEAK_FACTOR)


def active_peak(observed: Observed, settings: Settings, steps_per_hour: int) -> np.ndarray:
    """(users, len(RESOURCES)) the ``allocation_quantile`` of active demand over the recent
    ``reactive_window_hours`` (the whole history for users idle over that window).

    What one active interval of the user asks for: the size an hour forecast to be active gets
    at least, as the forecast of an hourly mean says when, not how much.
    """
    evaluation = settings.evaluation
    window = evaluation.reactive_window_hours * steps_per_hour
    recent = active_quantile(
        observed.demand[:, -window:], observed.session_active[:, -window:],
        evaluation.allocation_quantile,
    )  # fmt: skip
    idle = ~observed.session_active[:, -window:].any(axis=1)
    if idle.any():
        recent[idle] = active_quantile(
            observed.demand[idle], observed.session_active[idle], evaluation.allocation_quantile
        )
    return recent


def new_forecaster(settings: Settings, seed: int) -> LstmForecaster:
    """The LSTM in the evaluation's small configuration (``settings.evaluation``)."""
    evaluation = settings.evaluation
    return LstmForecaster(
        settings,
        encoder_length=evaluation.lstm_encoder_hours,
        horizon=evaluation.forecast_hours,
        hidden_size=evaluation.lstm_hidden_size,
        head_hidden_size=2 * evaluation.lstm_hidden_size,
        max_epochs=evaluation.lstm_epochs,
        samples_per_epoch=evaluation.lstm_samples_per_epoch,
        validation_hours=evaluation.lstm_validation_hours,
        patience=max(1, evaluation.lstm_epochs),
        seed=seed,
        threads=evaluation.lstm_threads,
    )


def forecast(model: LstmForecaster, panel: Panel, horizon: int) -> Forecast:
    """The next ``horizon`` hours after ``panel``'s last known hour (p50, p90, region probs)."""
    return model.predict(panel, horizon)


@dataclass
class SessionEnvelope:
    """Each user's peak demand over their last ``size`` active hours (a ring per user).

    What an active user is sized at: the forecast says *when* a user needs capacity; how much a
    session can ask for within an interval is what their recent sessions asked for at most.
    """

    peaks: np.ndarray  # (users, size, len(RESOURCES)) hourly active maxima, 0 where none yet
    cursor: np.ndarray  # (users,) next slot of each user's ring
    known_steps: int = 0

    @classmethod
    def empty(cls, users: int, size: int) -> SessionEnvelope:
        """An envelope over ``size`` active hours, nothing seen yet."""
        return cls(np.zeros((users, size, len(RESOURCES))), np.zeros(users, np.int64))

    def update(self, observed: Observed, steps_per_hour: int) -> None:
        """Add every whole hour completed before ``observed.step`` that had activity."""
        done = observed.step // steps_per_hour * steps_per_hour
        users = self.peaks.shape[0]
        rows = np.arange(users)
        for start in range(self.known_steps, done, steps_per_hour):
            hour = slice(start, start + steps_per_hour)
            active = observed.session_active[:, hour]
            peak = np.where(active[..., None], observed.demand[:, hour], 0.0).max(axis=1)
            seen = active.any(axis=1)
            self.peaks[rows[seen], self.cursor[seen]] = peak[seen]
            self.cursor[seen] = (self.cursor[seen] + 1) % self.peaks.shape[1]
        self.known_steps = max(self.known_steps, done)

    def peak(self, observed: Observed) -> np.ndarray:
        """(users, len(RESOURCES)) the ring's maxima and the current hour's active demand so far."""
        current = slice(self.known_steps, observed.step)
        active = observed.session_active[:, current]
        now = np.where(active[..., None], observed.demand[:, current], 0.0)
        recent = self.peaks.max(axis=1)
        return np.maximum(recent, now.max(axis=1)) if now.shape[1] else recent


def holdout_error(model: LstmForecaster, panel: Panel, hours: int, horizon: int) -> float:
    """The model's p50 error on the last ``hours`` of ``panel``, forecast ``horizon`` at a time.

    Mean absolute error over the allocated resources, each scaled by its mean actual value so
    that vCPU and GB weigh alike; hours without an observation are left out. What the policy's
    retraining gate compares a challenger and the champion on (neither fitted on these hours).
    """
    allocated = [RESOURCE_COLUMNS.index(name) for name in RESOURCES]
    errors, actuals = [], []
    for origin in range(panel.n_hours - hours, panel.n_hours, horizon):
        steps = min(horizon, panel.n_hours - origin)
        p50 = model.predict(panel.head(origin), steps).p50[..., allocated]
        actual = panel.values[:, origin : origin + steps][..., allocated]
        errors.append(np.abs(p50 - actual).reshape(-1, len(allocated)))
        actuals.append(actual.reshape(-1, len(allocated)))
    error, actual = np.concatenate(errors), np.concatenate(actuals)
    seen = np.isfinite(actual).all(axis=1)
    scale = np.maximum(actual[seen].mean(axis=0), 1e-9)
    return float((error[seen] / scale).mean()) if seen.any() else float("inf")
