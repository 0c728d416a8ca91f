"""The session envelope the predictive policy sizes active users with, and the error its
retraining gate compares models on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulation.eval_policy import Observed
from simulation.predictive_forecast import SessionEnvelope, holdout_error
from training.forecast import Forecast
from training.panel import Panel

PER_HOUR = 2


def observed(demand: np.ndarray, active: np.ndarray) -> Observed:
    """What monitoring recorded before ``len(active[0])``: (users, steps) CPU, RAM = 2 × CPU."""
    users, steps = active.shape
    empty = np.full((users, steps), np.nan)
    return Observed(
        step=steps,
        lat=empty,
        lon=empty,
        demand=np.stack([demand, 2 * demand], axis=-1),
        other_demand=np.zeros((users, steps, 2)),
        latency_ms=empty,
        session_active=active,
        region=np.zeros(users, np.int64),
        allocation=np.zeros((users, 2)),
        pending_region=np.full(users, -1, np.int64),
        free_vcpu=np.zeros(1),
    )


def test_the_envelope_is_the_peak_of_the_last_active_hours_only() -> None:
    # One user, four hours: peaks 5, (idle), 3, 2; a ring of two active hours keeps 3 and 2.
    demand = np.array([[5.0, 1.0, 0.0, 0.0, 3.0, 1.0, 2.0, 1.0]])
    active = demand > 0
    envelope = SessionEnvelope.empty(users=1, size=2)
    envelope.update(observed(demand, active), PER_HOUR)
    np.testing.assert_allclose(envelope.peak(observed(demand, active)), [[3.0, 6.0]])


def test_an_idle_hour_does_not_push_an_active_one_out() -> None:
    demand = np.array([[4.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    envelope = SessionEnvelope.empty(users=1, size=1)
    envelope.update(observed(demand, demand > 0), PER_HOUR)
    np.testing.assert_allclose(envelope.peak(observed(demand, demand > 0)), [[4.0, 8.0]])


def test_demand_of_the_hour_under_way_counts_at_once() -> None:
    # Two whole hours are in the ring; the third hour's first interval asks for more.
    demand = np.array([[1.0, 1.0, 1.0, 1.0, 9.0]])
    envelope = SessionEnvelope.empty(users=1, size=4)
    envelope.update(observed(demand[:, :4], demand[:, :4] > 0), PER_HOUR)
    now = observed(demand, demand > 0)
    envelope.update(now, PER_HOUR)  # no hour completed since: nothing added twice
    np.testing.assert_allclose(envelope.peak(now), [[9.0, 18.0]])


def test_users_are_kept_apart_and_a_user_never_active_gets_nothing() -> None:
    demand = np.array([[2.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    envelope = SessionEnvelope.empty(users=2, size=3)
    envelope.update(observed(demand, demand > 0), PER_HOUR)
    np.testing.assert_allclose(envelope.peak(observed(demand, demand > 0)), [[2, 4], [0, 0]])


class Echo:
    """A forecaster whose p50 is ``factor`` × what actually happened (it peeks, for the test)."""

    def __init__(self, panel: Panel, factor: float) -> None:
        self.panel, self.factor = panel, factor

    def predict(self, history: Panel, horizon: int) -> Forecast:
        origin = history.n_hours
        actual = self.panel.values[:, origin : origin + horizon] * self.factor
        return Forecast(p50=actual, p90=actual)


def _panel(hours: int = 30) -> Panel:
    rng = np.random.default_rng(0)
    values = rng.uniform(1, 5, size=(3, hours, 4)).astype(np.float32)
    values[0, -3] = np.nan  # an hour without observation is left out, not counted as an error
    return Panel(
        series_ids=("a", "b", "c"),
        times=pd.date_range("2026-01-01", periods=hours, freq="h"),
        values=values,
        region=np.full((3, hours), -1, np.int16),
        static=pd.DataFrame(index=pd.Index(["a", "b", "c"], name="series_id")),
    )


def test_holdout_error_is_zero_for_a_perfect_forecast_and_grows_with_the_miss() -> None:
    panel = _panel()
    assert holdout_error(Echo(panel, 1.0), panel, hours=12, horizon=5) == pytest.approx(0.0)
    # p50 = 0: every error is the actual value, scaled by the mean actual: 1 on average.
    assert holdout_error(Echo(panel, 0.0), panel, hours=12, horizon=5) == pytest.approx(1.0)
    half = holdout_error(Echo(panel, 0.5), panel, hours=12, horizon=5)
    assert half == pytest.approx(0.5)
