"""The world simulator: schema, determinism, realism, and truth/telemetry consistency."""

from __future__ import annotations

from pathlib import Path

import maxminddb
import numpy as np
import pandas as pd
import pytest
from _maxminddb_geolite2 import geolite2_database
from scipy.stats import mannwhitneyu

from core.latency import LatencyModel, great_circle_km
from core.schema import APPS, COLUMN_NAMES, PANDAS_DTYPES, RESOURCE_COLUMNS, ROLES
from core.settings import Settings
from simulation.world import TRUTH_ARRAYS, World, WorldConfig, simulate
from tests.simulation.conftest import with_simulation

OFFICE_ROLES = ("software_engineer", "analyst", "designer", "data_scientist")


def _local_clock(world: World, truth) -> tuple[np.ndarray, np.ndarray]:
    """Local hour and weekday of each (user, step) in the user's home time zone."""
    zones = world.users.set_index("user_id").loc[truth.user_ids, "home_timezone"]
    hours = np.empty((len(zones), len(truth.times)))
    weekdays = np.empty_like(hours, dtype=np.int64)
    for row, zone in enumerate(zones):
        local = truth.times.tz_convert(zone)
        hours[row], weekdays[row] = local.hour + local.minute / 60, local.weekday
    return hours, weekdays


def _per_user_active_mean(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    active = frame[frame["session_active"]]
    return active.groupby("user_id").agg(role=("role", "first"), value=(column, "mean"))


# ----- structure and determinism ---------------------------------------------------------------


def test_written_dataset_has_exactly_the_schema(tmp_path: Path, sim_settings: Settings) -> None:
    settings = with_simulation(sim_settings, block_users=25)
    summary = World(WorldConfig(users=40, days=2, seed=3), settings).write(tmp_path / "out")
    frame = pd.read_parquet(tmp_path / "out")
    assert list(frame.columns) == list(COLUMN_NAMES)
    assert {c: str(frame[c].dtype) for c in frame.columns} == PANDAS_DTYPES
    assert summary.rows == len(frame) == 40 * 2 * 288
    assert [p.name for p in summary.files] == ["part-00000.parquet", "part-00001.parquet"]
    assert frame["user_id"].is_monotonic_increasing
    assert (
        frame.groupby("user_id")["event_timestamp"].diff().dropna() == pd.Timedelta("5min")
    ).all()
    assert set(frame["role"]) <= set(ROLES) - {"unknown"}
    assert set(frame["app"]) <= set(APPS)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    tmp_path: Path, sim_settings: Settings
) -> None:
    settings = with_simulation(sim_settings, block_users=25)
    outputs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        World(WorldConfig(users=30, days=2, seed=seed), settings).write(tmp_path / name)
        outputs[name] = [p.read_bytes() for p in sorted((tmp_path / name).glob("*.parquet"))]
    assert outputs["a"] == outputs["b"]
    assert outputs["a"] != outputs["c"]
    first, other = pd.read_parquet(tmp_path / "a"), pd.read_parquet(tmp_path / "c")
    assert not np.allclose(first["cpu_cores"], other["cpu_cores"])


def test_rewrite_leaves_no_stale_parts(tmp_path: Path, sim_settings: Settings) -> None:
    settings = with_simulation(sim_settings, block_users=10)
    World(WorldConfig(users=30, days=1, seed=1), settings).write(tmp_path)
    summary = World(WorldConfig(users=10, days=1, seed=1), settings).write(tmp_path)
    assert sorted(tmp_path.glob("part-*.parquet")) == summary.files
    assert len(pd.read_parquet(tmp_path)) == 10 * 288


def test_simulate_reports_progress_and_summary(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    summary = simulate(
        users=12, days=1, seed=2, out=tmp_path, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (12, 12)
    assert (summary.users, summary.days, summary.rows) == (12, 1, 12 * 288)
    assert summary.seconds > 0 and summary.out == tmp_path
    assert all(p.exists() for p in summary.files)


def test_start_date_and_interval_can_be_chosen(sim_settings: Settings) -> None:
    world = World(
        WorldConfig(users=3, days=2, seed=1, start="2026-03-02", interval_minutes=15), sim_settings
    )
    assert world.times[0] == pd.Timestamp("2026-03-02", tz="UTC")
    assert len(world.times) == 2 * 96 and world.times.freq == pd.Timedelta("15min")
    assert world.truth().cpu_cores.shape == (3, 192)


# ----- who lives in the world ------------------------------------------------------------------


def test_users_come_from_several_continents_and_all_roles(small_world: World) -> None:
    users = small_world.users
    assert users["user_id"].tolist() == [f"u{i:05d}" for i in range(150)]
    assert users["home_continent"].nunique() >= 4
    assert set(users["role"]) == set(ROLES) - {"unknown"}
    assert users["home_timezone"].str.contains("/").all()
    assert set(users["home_region"]) <= set(small_world.catalogue.codes)


def test_roles_differ_in_travel_propensity(sim_settings: Settings) -> None:
    users = World(WorldConfig(users=1000, days=1, seed=4), sim_settings).users
    share = users.groupby("role")["traveller"].mean()
    for frequent in ("sales", "executive", "field_engineer"):
        assert share[frequent] > 3 * share["software_engineer"]
    assert share["software_engineer"] < 0.15


def test_traveller_share_override(sim_settings: Settings) -> None:
    many = World(WorldConfig(users=400, days=7, seed=4, traveller_share=0.9), sim_settings)
    none = World(WorldConfig(users=400, days=7, seed=4, traveller_share=0.0), sim_settings)
    assert many.users["traveller"].mean() == pytest.approx(0.9, abs=0.06)
    assert not none.users["traveller"].any() and none.trips.empty
    assert len(many.trips) > 100


# ----- behaviour -------------------------------------------------------------------------------


def test_roles_differ_in_demand_in_the_expected_direction(small_frame: pd.DataFrame) -> None:
    cpu = _per_user_active_mean(small_frame, "cpu_cores")
    scientists = cpu.loc[cpu["role"] == "data_scientist", "value"]
    sales = cpu.loc[cpu["role"] == "sales", "value"]
    assert mannwhitneyu(scientists, sales, alternative="greater").pvalue < 1e-3
    assert scientists.mean() > 4 * sales.mean()

    network = _per_user_active_mean(small_frame, "network_mbps")
    designers = network.loc[network["role"] == "designer", "value"]
    support = network.loc[network["role"] == "support_agent", "value"]
    assert mannwhitneyu(designers, support, alternative="greater").pvalue < 1e-3


def test_application_mix_follows_the_role(small_frame: pd.DataFrame) -> None:
    active = small_frame[small_frame["session_active"]]
    mix = pd.crosstab(active["role"], active["app"], normalize="index")
    assert (
        mix.loc["sales", "video_conference"] > 2 * mix.loc["software_engineer", "video_conference"]
    )
    assert mix.loc["data_scientist", "ml_training"] > 0.1
    assert mix.loc["support_agent", "ticketing"] > 0.3
    assert mix.loc["software_engineer", "ide"] > 0.3
    assert "ml_training" not in mix.columns or mix.loc["sales"].get("ml_training", 0) == 0


def test_bursts_spike_demand(small_world: World) -> None:
    truth = small_world.truth()
    roles = small_world.users["role"].to_numpy()
    rows = roles == "data_scientist"
    training = truth.app[rows] == APPS.index("ml_training")
    other = truth.session_active[rows] & ~training
    assert truth.cpu_cores[rows][training].mean() > 2 * truth.cpu_cores[rows][other].mean()


def test_working_hours_make_a_diurnal_pattern(small_world: World) -> None:
    truth = small_world.truth()
    hours, weekdays = _local_clock(small_world, truth)
    at_home_weekday = ~truth.travelling & (weekdays < 5)
    day = truth.session_active[at_home_weekday & (hours >= 10) & (hours < 16)].mean()
    night = truth.session_active[at_home_weekday & (hours >= 2) & (hours < 5)].mean()
    assert day > 0.6
    assert day > 8 * night


def test_office_roles_work_weekdays_and_support_covers_nights_and_weekends(
    small_world: World,
) -> None:
    truth = small_world.truth()
    hours, weekdays = _local_clock(small_world, truth)
    roles = small_world.users["role"].to_numpy()[:, None]
    active, home = truth.session_active, ~truth.travelling
    office = np.isin(roles, OFFICE_ROLES) & home
    weekday_share = active[office & (weekdays < 5)].mean()
    weekend_share = active[office & (weekdays >= 5)].mean()
    assert weekday_share > 5 * weekend_share

    support = (roles == "support_agent") & home
    assert active[support & (weekdays >= 5)].mean() > 3 * max(weekend_share, 1e-3)
    night = (hours >= 23) | (hours < 5)
    assert active[support & night].mean() > 0.05


def test_some_roles_start_early(small_world: World) -> None:
    truth = small_world.truth()
    hours, weekdays = _local_clock(small_world, truth)
    roles = small_world.users["role"].to_numpy()
    first_hour = {}
    for role in ("field_engineer", "software_engineer"):
        starts = []
        for row in np.flatnonzero(roles == role):
            for day in range(5):  # the world's first week starts on a Monday
                mask = (weekdays[row] == day) & truth.session_active[row] & ~truth.travelling[row]
                if mask.any():
                    starts.append(hours[row][mask].min())
        first_hour[role] = np.median(starts)
    assert first_hour["field_engineer"] < first_hour["software_engineer"] - 1.5


def test_demand_is_learnable_day_to_day(small_world: World) -> None:
    cpu = small_world.truth().cpu_cores
    hourly = cpu.reshape(cpu.shape[0], -1, 12).mean(axis=2)
    correlations = [
        np.corrcoef(series[24:], series[:-24])[0, 1] for series in hourly if series.std() > 0
    ]
    assert np.mean(correlations) > 0.3


def test_no_demand_and_no_probe_without_a_session(small_frame: pd.DataFrame) -> None:
    idle = small_frame[~small_frame["session_active"]]
    busy = small_frame[small_frame["session_active"]]
    assert len(idle) and len(busy)
    assert (idle[list(RESOURCE_COLUMNS)] == 0).all().all()
    assert (idle["data_access_count"] == 0).all()
    assert idle["latency_ms"].isna().all() and (idle["app"] == "idle").all()
    assert busy["latency_ms"].notna().all() and (busy["app"] != "idle").all()
    assert (busy["cpu_cores"] > 0).all() and (busy["cpu_cores"] <= 64).all()
    assert (busy["ram_gb"] <= 256).all()
    assert (small_frame[list(RESOURCE_COLUMNS)] >= 0).all().all()


# ----- travel and location ---------------------------------------------------------------------


def test_travellers_leave_and_come_home(small_world: World) -> None:
    truth = small_world.truth()
    users = small_world.users.set_index("user_id")
    trips = small_world.trips
    interval = pd.Timedelta(minutes=small_world.interval_minutes)
    checked = 0
    for trip in trips.itertuples():
        depart, leave, back = (
            (t - small_world.times[0]) // interval for t in (trip.depart, trip.leave, trip.back)
        )
        if depart < 0 or back >= small_world.n_steps:
            continue
        row = int(np.flatnonzero(truth.user_ids == trip.user_id)[0])
        home = users.loc[trip.user_id, ["home_lat", "home_lon"]].to_numpy(dtype=float)
        away = great_circle_km(*home, truth.lat[row, leave - 1], truth.lon[row, leave - 1])
        assert away > 300
        assert small_world.cities["name"].iat[truth.city[row, leave - 1]] == trip.destination
        assert truth.in_flight[row, depart] and truth.in_flight[row, back - 1]
        assert not truth.session_active[row, depart:back][truth.in_flight[row, depart:back]].any()
        assert great_circle_km(*home, truth.lat[row, back], truth.lon[row, back]) < 0.01
        checked += 1
    assert checked >= 5


def test_location_is_gps_or_the_geolite2_location_of_the_ip(
    small_world: World, small_frame: pd.DataFrame
) -> None:
    truth = small_world.truth()
    source = small_frame["geo_source"].fillna("none").to_numpy(dtype=str)
    in_flight = truth.in_flight.ravel()
    assert (source[in_flight] == "none").all() and small_frame["lat"][in_flight].isna().all()

    gps = source == "gps"
    error_m = 1000 * great_circle_km(
        truth.lat.ravel()[gps],
        truth.lon.ravel()[gps],
        small_frame["lat"][gps],
        small_frame["lon"][gps],
    )
    assert error_m.min() >= 9.9 and error_m.max() <= 50.1

    ip_rows = small_frame[source == "ip"]
    assert len(ip_rows) > 1000
    sample = ip_rows.sample(300, random_state=0)
    with maxminddb.open_database(geolite2_database()) as reader:
        for row in sample.itertuples():
            location = reader.get(row.client_ip)["location"]
            assert (row.lat, row.lon) == (location["latitude"], location["longitude"])
    error_km = great_circle_km(
        truth.lat.ravel()[source == "ip"],
        truth.lon.ravel()[source == "ip"],
        ip_rows["lat"],
        ip_rows["lon"],
    )
    assert np.median(error_km) < 100  # the address is near the user's city


def test_latency_is_at_least_the_fibre_floor_to_the_serving_region(
    small_world: World, small_frame: pd.DataFrame
) -> None:
    truth = small_world.truth()
    catalogue = small_world.catalogue
    serving = catalogue.indices(small_frame["serving_region"].to_numpy(dtype=str))
    distance = great_circle_km(
        truth.lat.ravel(), truth.lon.ravel(), catalogue.lat[serving], catalogue.lon[serving]
    )
    measured = small_frame["latency_ms"].to_numpy()
    probed = ~np.isnan(measured)
    floor = LatencyModel(small_world.settings.latency).floor_ms(distance[probed])
    assert (measured[probed] >= floor).all()
    home_region = small_world.users["home_region"].to_numpy()
    assert (
        small_frame["serving_region"].to_numpy(dtype=str)
        == np.repeat(home_region, small_world.n_steps)
    ).all()


def test_serving_region_can_be_chosen_by_the_caller(small_world: World) -> None:
    users, steps = np.arange(20), slice(0, 288)
    sydney = small_world.catalogue.index("aws-ap-southeast-2")
    serving = np.full((20, 288), sydney)
    frame = small_world.telemetry(users, steps, serving_region=serving)
    assert (frame["serving_region"] == "aws-ap-southeast-2").all()
    truth = small_world.truth(users, steps)
    distance = great_circle_km(
        truth.lat, truth.lon, small_world.catalogue.lat[sydney], small_world.catalogue.lon[sydney]
    )
    probed = frame["latency_ms"].notna().to_numpy()
    assert (frame["latency_ms"].to_numpy()[probed] >= 2 * distance.ravel()[probed] / 200).all()
    with pytest.raises(ValueError, match="shape"):
        small_world.telemetry(users, steps, serving_region=serving[:, :10])


# ----- truth and telemetry ---------------------------------------------------------------------


def test_telemetry_resources_equal_the_true_demand(
    small_world: World, small_frame: pd.DataFrame
) -> None:
    truth = small_world.truth()
    for name in RESOURCE_COLUMNS:
        assert np.array_equal(small_frame[name].to_numpy(), getattr(truth, name).ravel())
    assert np.array_equal(small_frame["session_active"].to_numpy(), truth.session_active.ravel())
    assert np.array_equal(
        small_frame["data_access_count"].to_numpy(), truth.data_access_count.ravel()
    )
    assert (small_frame["app"].to_numpy(dtype=str) == np.array(APPS)[truth.app.ravel()]).all()


def test_windows_are_slices_of_the_same_lives(
    small_world: World, small_frame: pd.DataFrame
) -> None:
    full = small_world.truth()
    users, steps = np.array([140, 3, 77, 3]), slice(500, 900)
    window = small_world.truth(users, steps)
    assert list(window.user_ids) == [f"u{i:05d}" for i in users]
    assert window.times.equals(small_world.times[500:900])
    for name in TRUTH_ARRAYS:
        assert np.array_equal(getattr(window, name), getattr(full, name)[users, 500:900]), name

    part = small_world.telemetry(users, steps).reset_index(drop=True)
    positions = (users[:, None] * small_world.n_steps + np.arange(500, 900)).ravel()
    expected = small_frame.iloc[positions].reset_index(drop=True)
    pd.testing.assert_frame_equal(part, expected)


def test_lives_do_not_depend_on_how_users_are_batched(
    small_world: World, sim_settings: Settings
) -> None:
    other = World(
        WorldConfig(users=150, days=7, seed=11),
        with_simulation(sim_settings, block_users=7, cached_blocks=1),
    )
    users = np.arange(0, 150, 9)
    mine, theirs = small_world.truth(users), other.truth(users)
    for name in TRUTH_ARRAYS:
        assert np.array_equal(getattr(mine, name), getattr(theirs, name)), name
    pd.testing.assert_frame_equal(small_world.telemetry(users[:5]), other.telemetry(users[:5]))


def test_simulated_telemetry_passes_the_validation_gate(sim_settings: Settings) -> None:
    from features.validation import validate_frame

    frame = World(WorldConfig(users=30, days=2, seed=9), sim_settings).telemetry()
    valid, quarantine, report = validate_frame(frame, now=pd.Timestamp("2026-06-01", tz="UTC"))
    assert report.failed_expectations == {}
    assert len(valid) == len(frame) and quarantine.empty
