import dataclasses
import time

import numpy as np
import pandas as pd
import pytest

from core.region_load import background_utilisation
from core.regions import RegionCatalogue, load_regions
from core.settings import PACKAGED_REGIONS_FILE, get_settings

MONTH = pd.date_range("2026-01-05", periods=30 * 288, freq="5min", tz="UTC")


@pytest.fixture(scope="module")
def catalogue() -> RegionCatalogue:
    return load_regions(PACKAGED_REGIONS_FILE)


@pytest.fixture(scope="module")
def month_load(catalogue) -> np.ndarray:
    return background_utilisation(catalogue, MONTH, seed=3)


def test_shape_dtype_and_bounds(catalogue, month_load):
    assert month_load.shape == (len(MONTH), len(catalogue))
    assert month_load.dtype == np.float64
    assert month_load.min() >= 0.0
    assert month_load.max() < 1.0


def test_each_region_mean_lies_in_a_plausible_band(month_load):
    means = month_load.mean(axis=0)
    assert np.all((means > 0.3) & (means < 0.75))
    assert means.max() - means.min() > 0.1  # regions are not all equally busy


def test_same_seed_same_load_other_seed_other_load(catalogue, month_load):
    again = background_utilisation(catalogue, MONTH, seed=3)
    other = background_utilisation(catalogue, MONTH, seed=4)
    np.testing.assert_array_equal(month_load, again)
    assert not np.allclose(month_load, other)


def test_load_varies_within_a_day(month_load):
    one_day = month_load[:288]
    daily_range = one_day.max(axis=0) - one_day.min(axis=0)
    assert np.all(daily_range > 0.05)


def test_regions_are_busier_in_their_local_afternoon_than_at_night(catalogue, month_load):
    utc_hours = MONTH.hour.to_numpy() + MONTH.minute.to_numpy() / 60
    local_hours = (utc_hours[:, None] + catalogue.lon[None, :] / 15.0) % 24
    deviation = month_load - month_load.mean(axis=0)
    afternoon = deviation[(local_hours >= 12) & (local_hours < 16)].mean()
    night = deviation[(local_hours >= 1) & (local_hours < 5)].mean()
    assert afternoon > night + 0.03


def test_a_region_load_depends_only_on_seed_and_its_code(catalogue, month_load):
    subset = RegionCatalogue(catalogue.regions[5:9])
    sub_load = background_utilisation(subset, MONTH, seed=3)
    np.testing.assert_array_equal(sub_load, month_load[:, 5:9])


def test_accepts_naive_datetime64_and_aware_timestamps_alike(catalogue):
    aware = MONTH[:50]
    naive = aware.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    np.testing.assert_array_equal(
        background_utilisation(catalogue, aware, seed=1),
        background_utilisation(catalogue, naive, seed=1),
    )


def test_interpolates_linearly_between_trace_samples(catalogue):
    # On the prime meridian local time is UTC, so a 5-minute UTC grid hits the trace's samples.
    greenwich = RegionCatalogue((dataclasses.replace(catalogue["aws-eu-west-2"], lon=0.0),))
    grid = pd.date_range("2026-02-01", periods=289, freq="5min", tz="UTC")
    on_grid = background_utilisation(greenwich, grid, seed=9)[:, 0]
    halfway = background_utilisation(greenwich, grid[:-1] + pd.Timedelta(seconds=150), seed=9)[:, 0]
    unclipped = (np.minimum(on_grid[:-1], on_grid[1:]) > 0) & (
        np.maximum(on_grid[:-1], on_grid[1:]) < get_settings().region_load.ceiling
    )
    assert unclipped.sum() > 200
    midpoints = (on_grid[:-1] + on_grid[1:]) / 2
    np.testing.assert_allclose(halfway[unclipped], midpoints[unclipped], atol=1e-12)
    assert not np.allclose(halfway, on_grid[:-1])


def test_rejects_missing_timestamps(catalogue):
    with pytest.raises(ValueError):
        background_utilisation(catalogue, pd.DatetimeIndex(["2026-01-01", None]), seed=1)


def test_a_month_for_25_regions_is_fast_after_the_first_load(catalogue, month_load):
    regions = RegionCatalogue(catalogue.regions[:25])
    started = time.perf_counter()
    background_utilisation(regions, MONTH, seed=11)
    assert time.perf_counter() - started < 1.0
