"""Hourly aggregation, user profiles and region status, checked against hand-computed values."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from core.latency import great_circle_km
from core.region_load import background_utilisation
from core.regions import load_regions
from core.schema import APPS, conform
from core.settings import get_settings
from features.aggregate import (
    APP_SHARE_FEATURES,
    HOURLY_COLUMNS,
    PROFILE_COLUMNS,
    REGION_STATUS_COLUMNS,
    hourly_user_features,
    region_status,
    user_profiles,
)

HOUR = pd.Timedelta(hours=1)
AMSTERDAM = (52.37, 4.90)
PARIS = (48.86, 2.35)


def telemetry(stamps: list[str], user: str = "u1", **columns: object) -> pd.DataFrame:
    """A conforming telemetry frame for one user: defaults overridden by ``columns``."""
    n = len(stamps)
    frame = pd.DataFrame(
        {
            "user_id": user,
            "event_timestamp": pd.to_datetime(stamps, utc=True, format="ISO8601"),
            "role": "analyst",
            "app": "ide",
            "session_active": True,
            "data_access_count": 1,
            "lat": AMSTERDAM[0],
            "lon": AMSTERDAM[1],
            "geo_source": "gps",
            "client_ip": pd.Series([None] * n, dtype="string"),
            "serving_region": "azure-westeurope",
            "latency_ms": 10.0,
            "cpu_cores": 1.0,
            "ram_gb": 2.0,
            "storage_iops": 100.0,
            "network_mbps": 5.0,
        },
        index=range(n),
    )
    for name, values in columns.items():
        frame[name] = values
    return conform(frame)


def test_hand_computed_statistics_of_one_hour() -> None:
    rows = telemetry(
        ["2026-03-02 10:00", "2026-03-02 10:05", "2026-03-02 10:10", "2026-03-02 10:15"],
        cpu_cores=[1.0, 2.0, 3.0, 10.0],
        session_active=[True, False, True, True],
        data_access_count=[0, 4, 5, 6],
        app=["ide", "ide", "browser", "email"],
        latency_ms=[10.0, 20.0, 30.0, 40.0],
    )
    out = hourly_user_features(rows)

    assert list(out.columns) == list(HOURLY_COLUMNS)
    assert len(out) == 1
    row = out.iloc[0]
    assert row["event_timestamp"] == pd.Timestamp("2026-03-02 11:00", tz="UTC")
    assert row["cpu_cores_mean"] == pytest.approx(4.0)
    # p95 by linear interpolation: position 0.95 * 3 = 2.85 between 3 and 10.
    assert row["cpu_cores_p95"] == pytest.approx(3.0 + 0.85 * 7.0)
    assert row["ram_gb_mean"] == pytest.approx(2.0)
    assert row["session_share"] == pytest.approx(0.75)
    assert row["data_access_count"] == 15
    assert row["sample_count"] == 4
    assert row["app_ide_share"] == pytest.approx(0.5)
    assert row["app_browser_share"] == pytest.approx(0.25)
    assert row["app_email_share"] == pytest.approx(0.25)
    assert row[list(APP_SHARE_FEATURES)].sum() == pytest.approx(1.0)
    assert row["latency_mean_ms"] == pytest.approx(25.0)
    assert row["latency_p95_ms"] == pytest.approx(30.0 + 0.85 * 10.0)


def test_irregular_stamps_are_bucketed_by_hour_and_gaps_stay_absent() -> None:
    rows = telemetry(
        ["2026-03-02 10:03", "2026-03-02 10:07", "2026-03-02 10:59:59", "2026-03-02 13:00"],
        cpu_cores=[1.0, 2.0, 3.0, 8.0],
    )
    out = hourly_user_features(rows)

    expected_ends = pd.to_datetime(["2026-03-02 11:00", "2026-03-02 14:00"], utc=True)
    assert list(out["event_timestamp"]) == list(expected_ends)  # 11:00-13:00 absent, no zeros
    assert list(out["sample_count"]) == [3, 1]
    assert list(out["cpu_cores_mean"]) == pytest.approx([2.0, 8.0])


def test_unsorted_rows_of_several_users_do_not_mix() -> None:
    first = telemetry(["2026-03-02 10:00", "2026-03-02 10:05"], user="a", cpu_cores=[1.0, 3.0])
    second = telemetry(["2026-03-02 10:00", "2026-03-02 10:05"], user="b", cpu_cores=[7.0, 9.0])
    shuffled = pd.concat([first, second]).iloc[[3, 0, 2, 1]].reset_index(drop=True)

    out = hourly_user_features(shuffled).set_index("user_id")

    assert out.loc["a", "cpu_cores_mean"] == pytest.approx(2.0)
    assert out.loc["b", "cpu_cores_mean"] == pytest.approx(8.0)


def test_last_position_region_distance_and_travel_flag() -> None:
    # Home is Amsterdam (all night, 00:00-05:00 UTC); at 12:00 the user is in Paris.
    night = [f"2026-03-02 {h:02d}:{m:02d}" for h in range(5) for m in (0, 30)]
    rows = telemetry(
        [*night, "2026-03-02 12:00", "2026-03-02 12:30"],
        lat=[AMSTERDAM[0]] * len(night) + [AMSTERDAM[0], PARIS[0]],
        lon=[AMSTERDAM[1]] * len(night) + [AMSTERDAM[1], PARIS[1]],
        serving_region=["azure-westeurope"] * (len(night) + 1) + ["aws-eu-west-3"],
    )
    out = hourly_user_features(rows).set_index("event_timestamp")
    noon = out.loc[pd.Timestamp("2026-03-02 13:00", tz="UTC")]
    catalogue = load_regions()

    assert (noon["last_lat"], noon["last_lon"]) == PARIS
    expected_km = great_circle_km(*AMSTERDAM, *PARIS)
    assert noon["distance_from_home_km"] == pytest.approx(expected_km)
    assert noon["travel_flag"]
    assert noon["last_region"] == catalogue.codes[int(catalogue.nearest(*PARIS))]
    assert not out.loc[pd.Timestamp("2026-03-02 01:00", tz="UTC"), "travel_flag"]
    # One row each for both regions: the tie goes to the region seen last in the hour.
    assert noon["serving_region"] == "aws-eu-west-3"


def test_travel_threshold_comes_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = telemetry(
        ["2026-03-02 01:00", "2026-03-02 12:00"],
        lat=[AMSTERDAM[0], PARIS[0]],
        lon=[AMSTERDAM[1], PARIS[1]],
    )
    monkeypatch.setenv("PREWARM_FEATURES__TRAVEL_THRESHOLD_KM", "1000")
    get_settings.cache_clear()

    out = hourly_user_features(rows)

    assert out["distance_from_home_km"].iloc[-1] > 400
    assert not out["travel_flag"].any()


def test_gwa_like_rows_without_position_or_latency() -> None:
    rows = telemetry(
        ["2026-03-02 10:00", "2026-03-02 10:05", "2026-03-02 11:00"],
        lat=np.nan,
        lon=np.nan,
        geo_source=pd.Series([None] * 3, dtype="string"),
        latency_ms=np.nan,
        role="unknown",
        app="unknown",
        cpu_cores=[2.0, 4.0, 6.0],
    )
    out = hourly_user_features(rows)

    assert list(out["cpu_cores_mean"]) == pytest.approx([3.0, 6.0])
    unknown = ["latency_mean_ms", "latency_p95_ms", "last_lat", "distance_from_home_km"]
    assert out[unknown].isna().all().all()
    assert out["last_region"].isna().all()
    assert not out["travel_flag"].any()
    assert (out["app_unknown_share"] == 1.0).all()

    profile = user_profiles(rows)
    assert len(profile) == 1
    assert profile["home_lat"].isna().all()
    assert profile["home_region"].iloc[0] == "azure-westeurope"  # the region that served it


def test_profile_home_is_the_night_location_and_uses_no_future_data() -> None:
    # Day 1: office hours in Paris only (10:00-14:00 UTC). Day 2: a night at home in Amsterdam
    # (02:00 UTC = 02:20 local solar time), then Paris again.
    office = [f"2026-03-02 {h:02d}:00" for h in range(10, 15)]
    later = ["2026-03-03 02:00", "2026-03-03 10:00", "2026-03-03 11:00"]
    rows = telemetry(
        office + later,
        lat=[PARIS[0]] * 5 + [AMSTERDAM[0], PARIS[0], PARIS[0]],
        lon=[PARIS[1]] * 5 + [AMSTERDAM[1], PARIS[1], PARIS[1]],
    )
    profile = user_profiles(rows)

    assert list(profile.columns) == list(PROFILE_COLUMNS)
    # Known after the first hour: only the office has been seen, so it is home for now.
    first, second = profile.iloc[0], profile.iloc[1]
    assert first["event_timestamp"] == pd.Timestamp("2026-03-02 11:00", tz="UTC")
    assert (first["home_lat"], first["home_lon"]) == pytest.approx(PARIS)
    # The first night row outweighs every daytime row: home moves, stamped at that hour's end.
    assert second["event_timestamp"] == pd.Timestamp("2026-03-03 03:00", tz="UTC")
    assert (second["home_lat"], second["home_lon"]) == pytest.approx(AMSTERDAM)
    assert second["home_region"] == load_regions().codes[int(load_regions().nearest(*AMSTERDAM))]
    assert len(profile) == 2  # unchanged hours add no rows

    hourly = hourly_user_features(rows).set_index("event_timestamp")
    day1 = hourly.loc[pd.Timestamp("2026-03-02 12:00", tz="UTC")]
    day2 = hourly.loc[pd.Timestamp("2026-03-03 11:00", tz="UTC")]
    assert day1["distance_from_home_km"] == pytest.approx(0.0)  # home as known then: Paris
    assert day2["distance_from_home_km"] == pytest.approx(great_circle_km(*AMSTERDAM, *PARIS))


def test_aggregation_is_vectorised_on_many_rows() -> None:
    users, steps = 200, 600  # 120,000 rows, 10,000 user-hours
    rng = np.random.default_rng(0)
    n = users * steps
    offsets = np.tile(np.arange(steps) * 300, users) + rng.integers(-30, 30, n)
    rows = telemetry(
        list(pd.Timestamp("2026-03-02", tz="UTC") + pd.to_timedelta(offsets, unit="s")),
        user=np.repeat([f"user-{i:03d}" for i in range(users)], steps),
        cpu_cores=rng.gamma(2.0, 1.0, n),
        app=rng.choice(np.asarray(APPS, dtype=object), n),
        lat=np.repeat(rng.uniform(-40, 60, users), steps),
        lon=np.repeat(rng.uniform(-120, 140, users), steps),
    )
    started = time.perf_counter()
    out = hourly_user_features(rows)
    elapsed = time.perf_counter() - started

    assert out["sample_count"].sum() == n
    assert out.groupby("user_id").size().between(50, 52).all()
    assert elapsed < 20.0, f"aggregating {n} rows took {elapsed:.1f} s"


def test_region_status_matches_background_load_and_prices() -> None:
    catalogue = load_regions()
    hours = pd.date_range("2026-03-02", periods=5, freq="h", tz="UTC")
    out = region_status(catalogue, hours, seed=7)

    assert list(out.columns) == list(REGION_STATUS_COLUMNS)
    assert len(out) == len(hours) * len(catalogue)
    load = background_utilisation(catalogue, hours, 7)
    code = catalogue.codes[3]
    series = out[out["region"] == code].sort_values("event_timestamp")
    assert list(series["event_timestamp"]) == list(hours)
    assert series["utilisation"].to_numpy() == pytest.approx(load[:, 3])
    assert (series["vcpu_hour_usd"] == catalogue[code].vcpu_hour_usd).all()
    expected_free = catalogue[code].capacity_vcpu * (1 - load[:, 3])
    assert series["available_vcpu"].to_numpy() == pytest.approx(expected_free)
    pd.testing.assert_frame_equal(out, region_status(catalogue, hours, seed=7))


def test_real_gwa_trace_with_outages_and_irregular_stamps(shared_datasets) -> None:
    from features.importers.gwa import read_gwa_csv, to_telemetry

    rows = to_telemetry(read_gwa_csv(shared_datasets / "bitbrains-rnd" / "raw-2013-7" / "1.csv"))
    out = hourly_user_features(rows)

    hours_with_data = set(rows["event_timestamp"].dt.floor("h"))
    assert set(out["event_timestamp"] - HOUR) == hours_with_data
    assert pd.Timestamp("2013-07-17 00:00", tz="UTC") not in hours_with_data  # trace outage
    assert out["sample_count"].sum() == len(rows)
    assert (out["sample_count"] != 12).any()  # partial hours at gaps and irregular stamps
    some_hour = out.iloc[len(out) // 2]
    in_hour = rows[rows["event_timestamp"].dt.floor("h") == some_hour["event_timestamp"] - HOUR]
    assert some_hour["ram_gb_mean"] == pytest.approx(in_hour["ram_gb"].mean())
    assert some_hour["cpu_cores_p95"] == pytest.approx(in_hour["cpu_cores"].quantile(0.95))
    assert out["latency_mean_ms"].isna().all()
