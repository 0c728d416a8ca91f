import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.latency import EARTH_RADIUS_KM, LatencyModel, great_circle_km
from core.settings import LatencySettings

LONDON = (51.5072, -0.1276)
NEW_YORK = (40.7128, -74.0060)
SYDNEY = (-33.8688, 151.2093)

distances = st.floats(min_value=0.0, max_value=21_000.0, allow_nan=False)
utilisations = st.floats(min_value=-1.0, max_value=2.0, allow_nan=False)


def test_london_new_york_great_circle_is_about_5570_km():
    assert great_circle_km(*LONDON, *NEW_YORK) == pytest.approx(5570, abs=15)


def test_great_circle_is_symmetric_zero_on_the_spot_and_half_the_earth_at_antipodes():
    assert great_circle_km(*LONDON, *SYDNEY) == pytest.approx(great_circle_km(*SYDNEY, *LONDON))
    assert great_circle_km(*LONDON, *LONDON) == pytest.approx(0.0, abs=1e-9)
    assert great_circle_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(np.pi * EARTH_RADIUS_KM)


def test_great_circle_broadcasts():
    lat1 = np.zeros((3, 1))
    lon2 = np.linspace(0, 90, 4).reshape(1, 4)
    d = great_circle_km(lat1, 0.0, 0.0, lon2)
    assert d.shape == (3, 4)
    assert d.dtype == np.float64
    np.testing.assert_allclose(d[0], np.radians([0, 30, 60, 90]) * EARTH_RADIUS_KM)


def test_floor_is_the_round_trip_at_fibre_speed():
    model = LatencyModel(LatencySettings(fibre_km_per_ms=200.0))
    assert model.floor_ms(1000.0) == pytest.approx(10.0)


def test_floor_rejects_negative_distance():
    with pytest.raises(ValueError):
        LatencyModel().floor_ms([10.0, -1.0])


def test_london_new_york_expected_rtt_is_plausible():
    model = LatencyModel(LatencySettings())
    rtt = model.expected_ms(great_circle_km(*LONDON, *NEW_YORK))
    assert 70.0 <= rtt <= 110.0


def test_expected_latency_grows_with_distance():
    model = LatencyModel(LatencySettings())
    expected = model.expected_ms(np.linspace(0, 20_000, 500), 0.3)
    assert np.all(np.diff(expected) > 0)


def test_congestion_is_zero_when_idle_equals_setting_at_half_load_and_grows():
    params = LatencySettings(congestion_ms=4.0, max_utilisation=0.98)
    model = LatencyModel(params)
    assert model.congestion_ms(0.0) == 0.0
    assert model.congestion_ms(0.5) == pytest.approx(4.0)
    u = np.linspace(0.0, 0.98, 200)
    assert np.all(np.diff(model.congestion_ms(u)) > 0)


def test_congestion_is_clipped_so_it_stays_finite():
    model = LatencyModel(LatencySettings(max_utilisation=0.98))
    saturated = model.congestion_ms([0.98, 1.0, 5.0])
    assert np.all(np.isfinite(saturated))
    np.testing.assert_allclose(saturated, saturated[0])
    assert model.congestion_ms(-0.3) == 0.0


def test_expected_adds_up_the_documented_terms():
    params = LatencySettings(route_inflation=2.0, last_mile_ms=5.0, congestion_ms=3.0)
    model = LatencyModel(params)
    # 1000 km -> floor 10 ms; inflated 20 ms; + 5 ms last mile; + 3 ms congestion at u=0.5
    assert model.expected_ms(1000.0, 0.5) == pytest.approx(28.0)


def test_results_broadcast_distance_against_utilisation():
    model = LatencyModel(LatencySettings())
    d = np.array([100.0, 1000.0, 5000.0])[:, None]
    u = np.array([0.1, 0.5, 0.9, 0.95])[None, :]
    assert model.expected_ms(d, u).shape == (3, 4)
    assert model.sample_ms(d, u, np.random.default_rng(0)).shape == (3, 4)


def test_sampled_jitter_is_non_negative_with_the_configured_mean():
    model = LatencyModel(LatencySettings(jitter_ms=2.0))
    d = np.full(200_000, 800.0)
    jitter = model.sample_ms(d, 0.4, np.random.default_rng(1)) - model.expected_ms(d, 0.4)
    assert jitter.min() >= 0.0
    assert jitter.mean() == pytest.approx(2.0, rel=0.02)


def test_sampling_is_reproducible_with_the_same_generator_seed():
    model = LatencyModel(LatencySettings())
    a = model.sample_ms(np.arange(10.0) * 100, 0.5, np.random.default_rng(7))
    b = model.sample_ms(np.arange(10.0) * 100, 0.5, np.random.default_rng(7))
    c = model.sample_ms(np.arange(10.0) * 100, 0.5, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@settings(max_examples=200, deadline=None)
@given(
    distance=distances,
    utilisation=utilisations,
    inflation=st.floats(min_value=1.0, max_value=3.0),
    last_mile=st.floats(min_value=0.0, max_value=50.0),
    jitter=st.floats(min_value=0.0, max_value=20.0),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_never_below_the_fibre_floor(distance, utilisation, inflation, last_mile, jitter, seed):
    model = LatencyModel(
        LatencySettings(route_inflation=inflation, last_mile_ms=last_mile, jitter_ms=jitter)
    )
    floor = model.floor_ms(distance)
    assert model.expected_ms(distance, utilisation) >= floor
    samples = model.sample_ms(np.full(50, distance), utilisation, np.random.default_rng(seed))
    assert np.all(samples >= floor)


@settings(max_examples=100, deadline=None)
@given(near=distances, extra=st.floats(min_value=0.0, max_value=5_000.0), u=utilisations)
def test_farther_is_never_faster_in_expectation(near, extra, u):
    model = LatencyModel(LatencySettings())
    assert model.expected_ms(near + extra, u) >= model.expected_ms(near, u)
