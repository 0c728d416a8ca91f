"""The training panel read point in time from the Feast offline store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from core.settings import FeastSettings, Settings
from features.aggregate import hourly_user_features, user_profiles
from features.store import apply_definitions, feature_store, training_frame, write_offline
from simulation.world import World, WorldConfig
from training.feature_panel import (
    VALUE_FEATURES,
    panel_from_feature_store,
    point_in_time_join,
    view_tables,
)
from training.panel import panel_from_telemetry

DAYS = 3
TTL = timedelta(hours=FeastSettings().hourly_ttl_hours)


@pytest.fixture(scope="module")
def telemetry() -> pd.DataFrame:
    """Four travelling users over three days (every user reports every 5 minutes)."""
    return World(WorldConfig(users=4, days=DAYS, seed=2, traveller_share=1.0)).telemetry()


def stocked_store(home: Path, hourly: pd.DataFrame, profiles: pd.DataFrame) -> FeatureStore:
    """A store under ``home`` with the definitions applied and these offline tables."""
    settings = Settings(home=home)
    store = feature_store(settings)
    apply_definitions(store)
    write_offline({"user_hourly": hourly, "user_profile": profiles}, settings)
    return store


@pytest.fixture(scope="module")
def gappy(tmp_path_factory, telemetry) -> tuple[FeatureStore, pd.DataFrame]:
    """A store whose hourly table misses 3 hours of u00000 (< TTL) and 10 of u00001 (> TTL),
    and which holds router feedback (a view with its own source and a 24 h TTL)."""
    hourly = hourly_user_features(telemetry)
    first = hourly["event_timestamp"].min()
    short = (hourly["user_id"] == "u00000") & hourly["event_timestamp"].between(
        first + timedelta(hours=20), first + timedelta(hours=22)
    )
    long = (hourly["user_id"] == "u00001") & hourly["event_timestamp"].between(
        first + timedelta(hours=30), first + timedelta(hours=39)
    )
    hourly = hourly[~(short | long)]
    home = tmp_path_factory.mktemp("gappy")
    store = stocked_store(home, hourly, user_profiles(telemetry))
    feedback = pd.DataFrame(
        {
            "user_id": ["u00002", "u00002", "u00003"],
            "event_timestamp": [first + timedelta(hours=h) for h in (5, 40, 12)],
            "feedback_latency_ms": [31.0, 47.5, 80.0],
            "feedback_slo_violation_share": [0.0, 0.25, 1.0],
            "feedback_migrations": [0, 2, 1],
        }
    )
    write_offline({"router_feedback": feedback}, Settings(home=home))
    return store, hourly


def entity_grid(users: list[str], start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Every user every 30 minutes from ``start`` to ``end``: on and between the stamps."""
    times = pd.date_range(start, end, freq="30min")
    return pd.DataFrame(
        {
            "user_id": np.repeat(users, len(times)),
            "event_timestamp": np.tile(times, len(users)),
        }
    )


def comparable(column: pd.Series) -> pd.Series:
    """Values as objects, every kind of null as None, numbers as float."""
    values = column.astype(object).where(column.notna(), None)
    return values.map(lambda v: float(v) if isinstance(v, int | float | np.number) else v)


def test_the_join_equals_feasts_get_historical_features(gappy) -> None:
    store, hourly = gappy
    first, last = hourly["event_timestamp"].min(), hourly["event_timestamp"].max()
    users = ["u00000", "u00001", "u00002", "u00003", "nobody"]
    # From before the first aggregate to past the TTL of the last one, unknown user included.
    entities = entity_grid(users, first - timedelta(hours=2), last + TTL + timedelta(hours=1))
    entities["label"] = np.arange(len(entities), dtype=float)

    ours = point_in_time_join(store, entities)
    feast = training_frame(store, entities)  # Feast's get_historical_features, view by view

    features = [f for table in view_tables(store) for f in table.features]
    assert len(features) > 30 and {"feedback_migrations", "role", "last_region"} <= set(features)
    ours = ours.sort_values(["user_id", "event_timestamp"], ignore_index=True)
    assert len(ours) == len(feast) == len(entities)
    assert list(ours["label"]) == list(feast["label"])
    for name in features:
        pd.testing.assert_series_equal(comparable(ours[name]), comparable(feast[name]))
    # The sample exercises the edges: missing before the first row and past the TTL.
    assert ours["cpu_cores_mean"].isna().any() and ours["cpu_cores_mean"].notna().any()
    assert ours["feedback_latency_ms"].notna().sum() > 0


def test_rows_come_back_once_in_the_given_order(gappy) -> None:
    store, hourly = gappy
    stamp = hourly["event_timestamp"].max()
    entities = pd.DataFrame(
        {"user_id": ["u00003", "u00000"], "event_timestamp": [stamp, stamp]}, index=[7, 3]
    )
    out = point_in_time_join(store, entities, features=["cpu_cores_mean"])
    expected = [
        hourly.set_index(["user_id", "event_timestamp"]).loc[(user, stamp), "cpu_cores_mean"]
        for user in ("u00003", "u00000")
    ]
    assert list(out["user_id"]) == ["u00003", "u00000"]
    assert list(out.columns) == ["user_id", "event_timestamp", "cpu_cores_mean"]
    assert out["cpu_cores_mean"].tolist() == pytest.approx(expected)


def test_the_panel_is_the_telemetry_panel_when_no_hour_is_missing(tmp_path, telemetry) -> None:
    store = stocked_store(tmp_path, hourly_user_features(telemetry), user_profiles(telemetry))
    panel = panel_from_feature_store(store, window_days=DAYS)
    expected = panel_from_telemetry(telemetry)

    assert panel.series_ids == expected.series_ids
    assert panel.times.equals(expected.times)
    np.testing.assert_array_equal(panel.values, expected.values)
    np.testing.assert_array_equal(panel.region, expected.region)
    assert panel.static.equals(expected.static)
    assert len(np.unique(panel.region[panel.region >= 0])) > 1  # they travel


def test_gaps_carry_the_last_aggregate_forward_within_the_ttl_only(gappy) -> None:
    store, hourly = gappy
    panel = panel_from_feature_store(store, window_days=DAYS)
    first_end = hourly["event_timestamp"].min()
    hour = {end: i for i, end in enumerate(panel.times + timedelta(hours=1))}
    short, long = panel.series_ids.index("u00000"), panel.series_ids.index("u00001")

    before_short = panel.values[short, hour[first_end + timedelta(hours=19)]]
    for missing in range(20, 23):
        np.testing.assert_array_equal(
            panel.values[short, hour[first_end + timedelta(hours=missing)]], before_short
        )
    ttl_hours = int(TTL / timedelta(hours=1))
    inside = [hour[first_end + timedelta(hours=h)] for h in range(30, 30 + ttl_hours)]
    past = [hour[first_end + timedelta(hours=h)] for h in range(30 + ttl_hours, 40)]
    assert not np.isnan(panel.values[long, inside]).any()
    assert np.isnan(panel.values[long, past]).all()
    assert (panel.region[long, past] == -1).all()


def test_the_panel_leaves_out_what_was_not_known_at_its_end(tmp_path, telemetry) -> None:
    hourly = hourly_user_features(telemetry)
    store = stocked_store(tmp_path, hourly, user_profiles(telemetry))
    end = hourly["event_timestamp"].min() + timedelta(hours=30, minutes=20)

    panel = panel_from_feature_store(store, window_days=1, end=end)

    assert panel.times[-1] + timedelta(hours=1) == end.floor("h")
    assert panel.n_hours == 24
    known = hourly[hourly["event_timestamp"] <= end].set_index(["user_id", "event_timestamp"])
    last = known.xs(end.floor("h"), level="event_timestamp")
    np.testing.assert_allclose(
        panel.values[:, -1], last.loc[list(panel.series_ids), list(VALUE_FEATURES)].to_numpy()
    )


def test_an_empty_or_unprepared_store_is_refused_clearly(tmp_path) -> None:
    store = feature_store(Settings(home=tmp_path / "bare"))
    with pytest.raises(ValueError, match="no feature service 'training'"):
        panel_from_feature_store(store, window_days=2)
    apply_definitions(store)
    with pytest.raises(ValueError, match="holds no hourly aggregates"):
        panel_from_feature_store(store, window_days=2)
