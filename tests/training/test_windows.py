"""Window cutting, scaling and the data module of the LSTM forecaster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from training.windows import (
    WindowDataModule,
    calendar,
    fit_scaler,
    series_tensors,
    split_origins,
    subsample,
    trip_history,
)

L, H = 48, 12
START = pd.Timestamp("2026-01-05 00:00", tz="UTC")  # a Monday


def _values(n: int, hours: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 1.0, size=(n, hours, 4)).astype(np.float32)


def _tensors(values: np.ndarray, region: np.ndarray | None = None):
    times = pd.date_range(START, periods=values.shape[1], freq="h")
    static = np.zeros((values.shape[0], 2), np.int64)
    return series_tensors(values, times, static, region, L, H)


def test_scale_is_the_in_sample_seasonal_naive_error():
    values = _values(3, 24 * 5)
    scaler = fit_scaler(values)
    expected = np.mean(np.abs(values[:, 24:] - values[:, :-24]), axis=1)
    np.testing.assert_allclose(scaler.scale, expected, rtol=1e-5)
    np.testing.assert_allclose(scaler.loc, np.median(values, axis=1), rtol=1e-5)


def test_scaling_round_trips_and_ignores_missing_hours():
    values = _values(2, 24 * 4)
    values[0, :30] = np.nan
    scaler = fit_scaler(values)
    assert np.all(np.isfinite(scaler.loc)) and np.all(scaler.scale > 0)
    scaled = scaler.transform(values)
    assert np.isnan(scaled[0, :30]).all()
    np.testing.assert_allclose(scaler.inverse(scaled), values, rtol=1e-4, atol=1e-5)


def test_constant_and_empty_series_get_a_usable_scale():
    values = np.full((2, 24 * 3, 4), 5.0, np.float32)
    values[1] = np.nan
    scaler = fit_scaler(values)
    np.testing.assert_array_equal(scaler.scale, np.ones((2, 4), np.float32))
    np.testing.assert_array_equal(scaler.loc, [[5.0] * 4, [0.0] * 4])


def test_calendar_gives_hour_of_day_and_weekday():
    times = pd.date_range(START, periods=30, freq="h")
    cal = calendar(times)
    assert cal[0].tolist() == [0, 0]
    assert cal[25].tolist() == [1, 1]  # Tuesday 01:00


def test_window_reads_the_hours_before_the_origin_and_targets_after():
    values = _values(2, 200)
    tensors = _tensors(values)
    batch = tensors.windows(torch.tensor([1]), torch.tensor([100]))
    np.testing.assert_array_equal(batch["past"][0].numpy(), values[1, 100 - L : 100])
    np.testing.assert_array_equal(batch["target"][0].numpy(), values[1, 100 : 100 + H])
    hours = pd.date_range(START, periods=200, freq="h")
    assert batch["future_calendar"][0, 0].tolist() == [hours[100].hour, hours[100].dayofweek]
    assert batch["past_calendar"][0, -1].tolist() == [hours[99].hour, hours[99].dayofweek]


def test_early_origins_are_padded_with_missing_hours():
    values = _values(1, 100)
    batch = _tensors(values).windows(torch.tensor([0]), torch.tensor([10]))
    past = batch["past"][0].numpy()
    assert np.isnan(past[: L - 10]).all()
    np.testing.assert_array_equal(past[L - 10 :], values[0, :10])


def test_window_at_the_end_of_data_has_future_calendar_but_no_targets():
    values = _values(1, 100)
    region = np.zeros((1, 100), np.int16)
    batch = _tensors(values, region).windows(torch.tensor([0]), torch.tensor([100]), targets=False)
    assert "target" not in batch and "target_region" not in batch
    assert batch["future_calendar"].shape == (1, H, 2)
    assert batch["past_region"].shape == (1, L)


def _trips_row(away_region: int) -> np.ndarray:
    """Home (0), a 4-hour stay in region 1, home again, two hours in ``away_region``, home."""
    return np.array([[0, 0, 0, 1, 1, 1, 1, -1, 0, 0, 0, 0, away_region, away_region, 0]])


def test_trip_history_counts_the_stay_and_the_typical_earlier_stay_there():
    trips = trip_history(_trips_row(1), home=np.array([0]))
    assert trips.shape == (1, 16, 4)
    np.testing.assert_array_equal(trips[0, 0], [0.0, np.nan, 0.0, -1.0])
    # In region 1 for 2 hours at origin 5; no earlier stay, so no typical one.
    np.testing.assert_array_equal(trips[0, 5], [2.0, np.nan, 0.0, -1.0])
    # Back in region 1 at origin 13: the first stay there lasted 4 hours up to its last known
    # hour, 6 up to the first hour known elsewhere (hour 8): 4.5 from the midway hour. Region 1
    # is the usual destination.
    np.testing.assert_array_equal(trips[0, 13], [1.0, 4.5, 1.0, 1.0])
    # Home at the end of the data: the one completed stay at home (hours 7-11) lasted 5.
    np.testing.assert_array_equal(trips[0, 15], [1.0, 5.0, 1.0, 1.0])


def test_trip_history_knows_no_typical_stay_in_a_new_region():
    trips = trip_history(_trips_row(2), home=np.array([0]))
    np.testing.assert_array_equal(trips[0, 13], [1.0, np.nan, 0.0, 1.0])


def test_trip_history_reads_only_the_hours_before_each_origin():
    rng = np.random.default_rng(4)
    region = rng.choice([-1, 0, 1, 2], size=(5, 300), p=[0.1, 0.6, 0.2, 0.1])
    region = np.repeat(region[:, ::12], 12, axis=1)  # stays of 12 hours or more
    home = np.zeros(5, np.int64)
    before = trip_history(region, home)
    changed = region.copy()
    changed[:, 150:] = rng.integers(-1, 3, size=(5, 150))
    after = trip_history(changed, home)
    np.testing.assert_array_equal(before[:, :151], after[:, :151])
    assert not np.array_equal(np.nan_to_num(before[:, 151:]), np.nan_to_num(after[:, 151:]))


def test_the_usual_destination_is_the_most_visited_region_away_from_home():
    region = np.array([[0, 2, 0, 1, 0, 1, 0, 2, 0, 3]])
    trips = trip_history(region, home=np.array([0]))
    assert trips[0, 7, 3] == 1.0  # earlier stays away: 2, 1, 1
    assert trips[0, 10, 3] == 2.0  # 2, 1, 1, 2: a tie, the latest wins
    assert trips[0, 2, 3] == -1.0  # only the current stay is away


def test_window_carries_the_trip_history_at_its_origin():
    values = _values(2, 200)
    region = np.repeat(np.array([[0, 1, 0, 1, 0], [1, 1, 0, 0, 1]]), 40, axis=1)
    tensors = _tensors(values, region)
    batch = tensors.windows(torch.tensor([1, 0]), torch.tensor([150, 200]), targets=False)
    expected = trip_history(region, np.zeros(2, np.int64))[[1, 0], [150, 200]]
    np.testing.assert_array_equal(batch["trip_history"].numpy(), expected)


def test_split_is_by_time_with_validation_at_the_end():
    observed = np.ones((3, 300), bool)
    train, validation = split_origins(observed, L, H, validation_hours=36)
    validation_start = 300 - 36
    assert np.all(train[:, 1] + H <= validation_start)
    assert np.all(validation[:, 1] >= validation_start)
    assert np.all(validation[:, 1] + H <= 300)
    assert set(train[:, 0]) == {0, 1, 2}


def test_split_keeps_cold_start_windows_but_not_windows_without_data():
    observed = np.ones((2, 300), bool)
    observed[1, :200] = False  # a user who appeared at hour 200
    train, _ = split_origins(observed, L, H, validation_hours=36)
    late = train[train[:, 0] == 1, 1]
    assert late.min() == 201  # the first window with one observed encoder hour
    assert np.any(late < 200 + L)  # partly padded encoders are trained on


def test_split_refuses_a_history_too_short_to_validate():
    with pytest.raises(ValueError, match="too short"):
        split_origins(np.ones((1, 30), bool), L, H, validation_hours=36)


def test_data_module_draws_the_same_windows_for_the_same_seed():
    values = _values(3, 300)
    tensors = _tensors(values)
    train, validation = split_origins(np.ones((3, 300), bool), L, H, 36)

    def first_epoch(seed: int) -> list[torch.Tensor]:
        data = WindowDataModule(tensors, train, validation, 32, 100, seed)
        return [batch["past"].nan_to_num(-1.0) for batch in data.train_dataloader()]

    batches = first_epoch(1)
    assert sum(len(b) for b in batches) == 100
    assert all(torch.equal(a, b) for a, b in zip(batches, first_epoch(1), strict=True))
    assert not torch.equal(batches[0], first_epoch(2)[0])
    data = WindowDataModule(tensors, train, validation, 32, 100, 1)
    assert sum(len(b["past"]) for b in data.val_dataloader()) == len(validation)


def test_subsample_caps_the_windows_reproducibly_and_keeps_their_order():
    origins = np.stack([np.arange(1000) % 7, np.arange(1000)], axis=1)
    picked = subsample(origins, 100, seed=3)
    assert len(picked) == 100
    assert np.all(np.diff(picked[:, 1]) > 0)
    np.testing.assert_array_equal(picked, subsample(origins, 100, seed=3))
    assert subsample(origins, 5000, seed=3) is origins
