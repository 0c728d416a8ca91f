"""The model input of batch prediction equals training's panel: no train/serve skew."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.regions import load_regions
from core.settings import Settings
from features.aggregate import hourly_user_features, user_profiles
from features.store import feature_store
from serving.predict_features import active_users, newest_feature_hour, shard_features
from simulation.world import World, WorldConfig
from tests.serving.predict_world import stock_store
from training.feature_panel import VALUE_FEATURES, panel_from_feature_store
from training.panel import Panel

HOURS = 48
TTL = timedelta(hours=Settings().feast.hourly_ttl_hours)


@pytest.fixture(scope="module")
def telemetry() -> pd.DataFrame:
    """Five travelling users over four days."""
    return World(WorldConfig(users=5, days=4, seed=3, traveller_share=1.0)).telemetry()


@pytest.fixture(scope="module")
def gappy_store(tmp_path_factory, telemetry):
    """A store missing 3 hours of u00000 (< TTL) and 9 of u00001 (> TTL) near the end, all of
    u00004's last day (it falls out of the window's last hours), and written twice with a
    changed value for one row (the later write wins)."""
    hourly = hourly_user_features(telemetry)
    last = hourly["event_timestamp"].max()
    stamp, user = hourly["event_timestamp"], hourly["user_id"]

    def hours_back(first: int, final: int) -> pd.Series:
        return stamp.between(last - timedelta(hours=first), last - timedelta(hours=final))

    gaps = (
        ((user == "u00000") & hours_back(10, 8))
        | ((user == "u00001") & hours_back(20, 12))
        | ((user == "u00004") & (stamp > last - timedelta(hours=24)))
    )
    settings = Settings(home=tmp_path_factory.mktemp("gappy") / "home")
    stock_store(settings, hourly[~gaps], user_profiles(telemetry))
    changed = hourly[(user == "u00002") & (stamp == last - timedelta(hours=5))]
    stock_store(settings, changed.assign(cpu_cores_mean=123.0), user_profiles(telemetry))
    return feature_store(settings), last


def assert_same_panel(ours: Panel, theirs: Panel) -> None:
    assert ours.series_ids == theirs.series_ids
    assert ours.times.equals(theirs.times)
    np.testing.assert_array_equal(ours.values, theirs.values)
    np.testing.assert_array_equal(ours.region, theirs.region)
    pd.testing.assert_frame_equal(ours.static, theirs.static)


def training_window(store, end: pd.Timestamp, users: list[str]) -> Panel:
    """Training's panel (feature service ``training``) cut to the last HOURS hours and users."""
    full = panel_from_feature_store(store, window_days=4, end=end + timedelta(minutes=20))
    window = full.window(full.n_hours - HOURS, full.n_hours)
    rows = [full.series_ids.index(u) for u in users]
    return Panel(
        tuple(users),
        window.times,
        window.values[rows],
        window.region[rows],
        window.static.loc[list(users)],
    )


def test_the_prediction_window_equals_trainings_panel(gappy_store) -> None:
    store, last = gappy_store
    catalogue = load_regions()
    features = shard_features(store, "serving", last, HOURS, catalogue)
    panel = features.panel

    assert panel.series_ids == ("u00000", "u00001", "u00002", "u00003", "u00004")
    assert_same_panel(panel, training_window(store, last, list(panel.series_ids)))
    # The sample exercises the join's edges: carried forward, expired, overwritten.
    u0, u1, u2 = 0, 1, 2
    np.testing.assert_array_equal(panel.values[u0, -10], panel.values[u0, -11])
    assert np.isnan(panel.values[u1, -15]).all() and not np.isnan(panel.values[u1, -21]).any()
    assert panel.values[u2, -6, VALUE_FEATURES.index("cpu_cores_mean")] == 123.0
    assert np.isnan(panel.values[4, -1]).all()
    assert features.newest[4] == last - timedelta(hours=24)
    assert (features.newest[:4] == last).all() and features.from_online == 0


def test_a_shard_of_users_gets_the_same_rows_as_the_whole(gappy_store) -> None:
    store, last = gappy_store
    catalogue = load_regions()
    shard = shard_features(store, "serving", last, HOURS, catalogue, "u00001", "u00003").panel

    assert shard.series_ids == ("u00001", "u00002", "u00003")
    assert_same_panel(shard, training_window(store, last, list(shard.series_ids)))


def test_the_plan_sees_the_newest_hour_and_the_active_users(gappy_store) -> None:
    store, last = gappy_store
    assert newest_feature_hour(store, "serving", last + timedelta(minutes=59)) == last
    assert newest_feature_hour(store, "serving", last - timedelta(minutes=1)) == last - timedelta(
        hours=1
    )
    assert newest_feature_hour(store, "serving", last - timedelta(days=30)) is None
    assert active_users(store, "serving", last, 20) == ["u00000", "u00001", "u00002", "u00003"]
    assert len(active_users(store, "serving", last, HOURS)) == 5


def test_the_newest_hour_comes_from_the_online_store_when_offline_lacks_it(
    tmp_path, telemetry
) -> None:
    hourly = hourly_user_features(telemetry)
    last = hourly["event_timestamp"].max()
    newest = (hourly["user_id"] == "u00003") & (hourly["event_timestamp"] == last)
    settings = Settings(home=tmp_path / "home")
    stock_store(settings, hourly[~newest], user_profiles(telemetry))
    store = feature_store(settings)
    # The newest hour of u00003 reached the online store only (as a stream would write it).
    streamed = hourly[newest].assign(created=pd.Timestamp.now(tz="UTC"))
    store.write_to_online_store("user_resources", streamed.assign(cpu_cores_mean=77.0))
    store.write_to_online_store("user_location", streamed)

    features = shard_features(store, "serving", last, HOURS, load_regions())
    offline_only = shard_features(store, "serving", last, HOURS, load_regions(), online=False)

    row = features.panel.series_ids.index("u00003")
    assert features.from_online == 1 and offline_only.from_online == 0
    assert features.panel.values[row, -1, VALUE_FEATURES.index("cpu_cores_mean")] == 77.0
    expected = hourly[newest].iloc[0]
    assert features.panel.values[row, -1, 1] == pytest.approx(expected["ram_gb_mean"])
    assert features.newest[row] == last
    # Offline alone carries the hour before forward (within the TTL), as training would.
    np.testing.assert_array_equal(
        offline_only.panel.values[row, -1], offline_only.panel.values[row, -2]
    )
    assert offline_only.newest[row] == last - timedelta(hours=1)
