"""The rolling-origin backtest: fold layout, no look-ahead, the JSON contract and the scores."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from core.schema import RESOURCE_COLUMNS
from core.settings import Settings
from tests.training.synthetic import daily_pattern, make_panel, noisy_daily_panel
from training.backtest import fold_origins, make_forecasters, run_backtest
from training.baselines import AutoEts, LightGbm, SeasonalNaive
from training.forecast import Forecast
from training.panel import Panel

METRICS = ("mase", "smape", "pinball_p90", "coverage_p90")
FAST = Settings(
    backtest={
        "ets_workers": 1,
        "ets_window_hours": 120,
        "lightgbm_rounds": 60,
        "lightgbm_max_rows": 30_000,
        "lightgbm_threads": 1,
    }
)


class HistoryMean:
    """A deliberately bad forecaster: the whole panel's mean, flat, for every series."""

    name = "history_mean"

    def fit(self, history: Panel) -> None:
        self.level = float(np.nanmean(history.values))

    def predict(self, history: Panel, horizon: int) -> Forecast:
        flat = np.full((history.n_series, horizon, len(RESOURCE_COLUMNS)), self.level)
        return Forecast(p50=flat, p90=flat * 1.5)


class Recorder(HistoryMean):
    """Records what it was given, to prove that no fold sees data past its origin."""

    name = "recorder"

    def __init__(self) -> None:
        self.fitted_on: list[tuple[int, float]] = []
        self.predicted_from: list[int] = []

    def fit(self, history: Panel) -> None:
        super().fit(history)
        self.fitted_on.append((history.n_hours, float(np.nanmax(history.values[..., 0]))))

    def predict(self, history: Panel, horizon: int) -> Forecast:
        self.predicted_from.append(history.n_hours)
        return super().predict(history, horizon)


def test_fold_origins_tile_the_last_k_horizons() -> None:
    assert fold_origins(n_hours=100, horizon=10, folds=3) == [70, 80, 90]
    assert fold_origins(n_hours=100, horizon=24, folds=1) == [76]
    with pytest.raises(ValueError, match="history"):
        fold_origins(n_hours=100, horizon=30, folds=3)  # 10 h before the first origin


def test_no_model_sees_data_past_its_origin() -> None:
    hours = 10 * 24
    values = np.zeros((2, hours, 4))
    values[..., 0] = np.arange(hours)  # the value is the hour index
    recorder = Recorder()
    run_backtest(make_panel(values), horizon=24, folds=3, forecasters=[recorder])
    origins = [hours - 72, hours - 48, hours - 24]
    assert recorder.fitted_on == [(o, o - 1) for o in origins]  # latest value seen: o - 1
    assert recorder.predicted_from == origins


def test_result_follows_the_json_contract() -> None:
    panel = noisy_daily_panel(n=3, days=8)
    calls: list[tuple[int, int]] = []
    result = run_backtest(
        panel, 24, 2, [SeasonalNaive(), HistoryMean()], progress=lambda d, t: calls.append((d, t))
    )
    assert {"horizon", "folds", "n_series", "models"} <= set(result)
    assert (result["horizon"], result["folds"], result["n_series"]) == (24, 2, 3)
    assert set(result["models"]) == {"seasonal_naive", "history_mean"}
    for scores in result["models"].values():
        for metric in METRICS:
            assert set(scores[metric]) == {*RESOURCE_COLUMNS, "mean"}
            values = [scores[metric][r] for r in RESOURCE_COLUMNS]
            assert scores[metric]["mean"] == pytest.approx(np.mean(values))
        assert scores["region_top1"] is None  # the panel has no location
        assert scores["fit_seconds"] >= 0
    assert result["region_persistence_top1"] is None
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    json.dumps(result, allow_nan=False)  # plain JSON: no NaN


def test_seasonal_naive_scores_zero_mase_on_a_daily_periodic_series() -> None:
    values = daily_pattern(n=3, days=6)
    values[:, 5] += 1.0  # one odd hour early on, so the in-sample naive error is not zero
    result = run_backtest(make_panel(values), 24, 3, [SeasonalNaive()])
    mase = result["models"]["seasonal_naive"]["mase"]
    assert mase["mean"] == pytest.approx(0.0, abs=1e-6)
    assert result["models"]["seasonal_naive"]["mase_excluded"]["cpu_cores"] == 0


def test_series_with_a_zero_naive_scale_are_excluded_and_counted() -> None:
    values = noisy_daily_panel(n=3, days=4).values.copy()
    values[1, :, 3] = 0.0  # an all-zero network series, as in GWA
    scores = run_backtest(make_panel(values), 24, 2, [HistoryMean()])["models"]["history_mean"]
    assert scores["mase_excluded"] == {
        "cpu_cores": 0, "ram_gb": 0, "storage_iops": 0, "network_mbps": 2, "of": 6
    }
    assert np.isfinite(scores["mase"]["network_mbps"])  # the two other series still count


def test_region_top1_scores_the_region_forecast_and_persistence() -> None:
    values = daily_pattern(n=2, days=3)
    region = np.zeros((2, 72), dtype=np.int16)
    region[0, 60:] = 1  # series 0 moves at hour 60 (inside fold 1: 48..59 at 0, then 1)
    panel = make_panel(values, region=region)
    result = run_backtest(panel, 12, 2, [SeasonalNaive(), HistoryMean()])
    # fold 1 (origin 48): s0 stays at 0 for hours 48..59 -> 12 hits;
    # fold 2 (origin 60): s0's last known region is 0, but it is at 1 -> 0 hits; s1 always hits.
    expected = (12 + 0 + 12 + 12) / 48
    assert result["region_persistence_top1"] == pytest.approx(expected)
    assert result["models"]["seasonal_naive"]["region_top1"] == pytest.approx(expected)
    assert result["models"]["history_mean"]["region_top1"] is None  # no region forecast


def test_baselines_beat_a_deliberately_bad_forecaster() -> None:
    panel = noisy_daily_panel(n=4, days=16, noise=0.15)
    forecasters = [SeasonalNaive(), AutoEts(FAST), LightGbm(FAST), HistoryMean()]
    models = run_backtest(panel, 24, 2, forecasters)["models"]
    bad = models["history_mean"]["mase"]["mean"]
    for name in ("seasonal_naive", "ets", "lightgbm"):
        assert models[name]["mase"]["mean"] < 0.5 * bad, name
        assert models[name]["pinball_p90"]["mean"] < models["history_mean"]["pinball_p90"]["mean"]
        assert 0.5 < models[name]["coverage_p90"]["mean"] <= 1.0


def test_a_forecast_with_missing_numbers_is_refused() -> None:
    class Broken(HistoryMean):
        name = "broken"

        def predict(self, history: Panel, horizon: int) -> Forecast:
            forecast = super().predict(history, horizon)
            forecast.p50[0, 0, 0] = np.nan
            return forecast

    with pytest.raises(ValueError, match="broken"):
        run_backtest(noisy_daily_panel(n=2, days=4), 24, 1, [Broken()])


def test_make_forecasters_builds_baselines_by_name() -> None:
    models = make_forecasters(["lightgbm", "seasonal_naive", "ets"], FAST)
    assert [type(m) for m in models] == [LightGbm, SeasonalNaive, AutoEts]
    with pytest.raises(ValueError, match="unknown model 'arima'"):
        make_forecasters(["arima"])


def test_make_forecasters_names_the_lstm_module_when_it_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "training.lstm", None)  # makes the import fail
    with pytest.raises(RuntimeError, match=r"training\.lstm\.LstmForecaster"):
        make_forecasters(["lstm"])
