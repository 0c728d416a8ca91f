"""The Feast store: point-in-time joins, offline upserts, online round trips (SQLite, Redis)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from feast import FeatureStore
from feast.repo_config import load_repo_config
from feast.repo_operations import parse_repo

from core.regions import load_regions
from core.schema import conform
from core.settings import FeastSettings, Settings
from features.aggregate import (
    RESOURCE_FEATURES,
    hourly_user_features,
    region_status,
    user_profiles,
)
from features.repo.definitions import DEFINITIONS
from features.store import (
    apply_definitions,
    feature_store,
    materialize_window,
    online_features,
    push_feedback,
    region_features,
    repo_path,
    training_frame,
    write_offline,
)
from tests.conftest import REDIS_URL, redis_keys_removed

START = pd.Timestamp("2026-10-01 00:00", tz="UTC")  # a Thursday, safely in the past
CUT = pd.Timestamp("2026-10-01 03:00", tz="UTC")  # telemetry from here on is distinctive
END = pd.Timestamp("2026-10-01 06:00", tz="UTC")
AMSTERDAM = (52.37, 4.90)
PARIS = (48.86, 2.35)


def distinctive_telemetry() -> pd.DataFrame:
    """Two users every 5 minutes from START to END; from CUT on, values no earlier row has.

    Before CUT: 1 and 2 CPU cores, role analyst, in Amsterdam. From CUT: 100 and 200 cores,
    role executive, in Paris.
    """
    stamps = pd.date_range(START, END, freq="5min", inclusive="left")
    late = np.asarray(stamps >= CUT)
    frames = []
    for user, (early_cpu, late_cpu) in {"alice": (1.0, 100.0), "bob": (2.0, 200.0)}.items():
        n = len(stamps)
        frames.append(
            pd.DataFrame(
                {
                    "user_id": user,
                    "event_timestamp": stamps,
                    "role": np.where(late, "executive", "analyst"),
                    "app": "ide",
                    "session_active": True,
                    "data_access_count": 1,
                    "lat": np.where(late, PARIS[0], AMSTERDAM[0]),
                    "lon": np.where(late, PARIS[1], AMSTERDAM[1]),
                    "geo_source": "gps",
                    "client_ip": pd.Series([None] * n, dtype="string"),
                    "serving_region": "azure-westeurope",
                    "latency_ms": np.where(late, 90.0, 10.0),
                    "cpu_cores": np.where(late, late_cpu, early_cpu),
                    "ram_gb": 4.0,
                    "storage_iops": 100.0,
                    "network_mbps": 5.0,
                }
            )
        )
    return conform(pd.concat(frames, ignore_index=True))


def scratch_settings(home: Path, **feast: object) -> Settings:
    """Settings for a scratch home; explicit values so outside PREWARM_* cannot leak in."""
    return Settings(home=home, feast=FeastSettings(**feast))


def populate(settings: Settings, telemetry: pd.DataFrame) -> FeatureStore:
    """Apply the definitions, write the feature tables and materialise START..END+1h."""
    store = feature_store(settings)
    apply_definitions(store)
    hours = pd.date_range(START, END, freq="h")
    write_offline(
        {
            "user_hourly": hourly_user_features(telemetry),
            "user_profile": user_profiles(telemetry),
            "region_status": region_status(load_regions(), hours, seed=1),
        },
        settings,
    )
    materialize_window(store, START, END + timedelta(hours=1))
    return store


@pytest.fixture(scope="module")
def telemetry() -> pd.DataFrame:
    return distinctive_telemetry()


@pytest.fixture(scope="module")
def sqlite_store(
    tmp_path_factory: pytest.TempPathFactory, telemetry: pd.DataFrame
) -> tuple[FeatureStore, Settings]:
    settings = scratch_settings(tmp_path_factory.mktemp("feast-sqlite"))
    return populate(settings, telemetry), settings


def entity_rows(users: list[str], times: list[pd.Timestamp]) -> pd.DataFrame:
    return pd.DataFrame(
        [(user, time) for user in users for time in times],
        columns=["user_id", "event_timestamp"],
    )


def test_training_features_never_contain_data_from_after_t(sqlite_store, telemetry) -> None:
    store, _ = sqlite_store
    before_or_at_cut = [
        CUT - timedelta(minutes=30),
        CUT,  # inclusive bound: the 02:00-03:00 aggregate, stamped 03:00, is joined
        CUT + timedelta(minutes=59, seconds=59),  # the 03:00-04:00 hour is not known yet
    ]
    # For a row at t, "after t" means telemetry stamped >= t's last complete hour end.
    frame = training_frame(store, entity_rows(["alice", "bob"], before_or_at_cut))

    assert len(frame) == 6
    early_max = {"alice": 1.0, "bob": 2.0}
    for _, row in frame.iterrows():
        assert row["cpu_cores_mean"] == pytest.approx(early_max[row["user_id"]])
        assert row["cpu_cores_p95"] == pytest.approx(early_max[row["user_id"]])
        assert row["latency_p95_ms"] == pytest.approx(10.0)
        assert (row["last_lat"], row["last_lon"]) == AMSTERDAM
        assert row["role"] == "analyst"
        assert row["sample_count"] == 12


def test_training_features_from_after_t_appear_once_known(sqlite_store) -> None:
    store, _ = sqlite_store
    times = [CUT + timedelta(hours=1), END]
    frame = training_frame(store, entity_rows(["alice", "bob"], times)).set_index("user_id")

    assert list(frame.loc["alice", "cpu_cores_mean"]) == pytest.approx([100.0, 100.0])
    assert list(frame.loc["bob", "cpu_cores_mean"]) == pytest.approx([200.0, 200.0])
    assert (frame["role"] == "executive").all()
    assert frame["travel_flag"].all()  # in Paris, home stays Amsterdam


def test_training_rows_match_the_hourly_table_at_every_hour(sqlite_store, telemetry) -> None:
    store, _ = sqlite_store
    hourly = hourly_user_features(telemetry).set_index(["user_id", "event_timestamp"])
    ends = list(pd.date_range(START + timedelta(hours=1), END, freq="h"))
    frame = training_frame(store, entity_rows(["alice", "bob"], ends))

    expected = hourly.loc[list(zip(frame["user_id"], frame["event_timestamp"], strict=True))]
    for column in RESOURCE_FEATURES:
        assert frame[column].to_numpy() == pytest.approx(expected[column].to_numpy())


def test_rows_before_the_first_or_past_the_ttl_of_the_last_aggregate_are_kept(
    sqlite_store,
) -> None:
    store, _ = sqlite_store
    early = START - timedelta(hours=1)
    late = END + timedelta(hours=FeastSettings().hourly_ttl_hours, minutes=1)
    entities = entity_rows(["alice"], [early, late]).assign(label=[0.5, 1.5])
    frame = training_frame(store, entities)

    assert list(frame["event_timestamp"]) == [early, late]
    assert list(frame["label"]) == [0.5, 1.5]  # extra columns pass through
    assert frame[list(RESOURCE_FEATURES)].isna().all(axis=None)
    assert frame["role"].isna().iloc[0]  # no profile known yet
    assert frame["role"].iloc[1] == "executive"  # profiles do not expire
    assert list(frame["hour"]) == [23, 12]  # 06:00 + 6 h 1 min


def test_time_encodings_follow_the_entity_timestamp(sqlite_store) -> None:
    store, _ = sqlite_store
    six_am = START + timedelta(hours=6)  # Thursday 06:00 UTC
    row = training_frame(store, entity_rows(["alice"], [six_am])).iloc[0]

    assert (row["hour"], row["dow"]) == (6, 3)
    assert (row["hour_sin"], row["hour_cos"]) == pytest.approx((1.0, 0.0), abs=1e-12)
    angle = 2 * np.pi * (3 + 6 / 24) / 7
    assert (row["dow_sin"], row["dow_cos"]) == pytest.approx((np.sin(angle), np.cos(angle)))


def test_online_time_encodings_describe_the_request_moment(sqlite_store) -> None:
    store, _ = sqlite_store
    sunday_evening = datetime(2026, 10, 4, 18, 30, tzinfo=UTC)
    row = online_features(store, ["alice"], at=sunday_evening).iloc[0]

    assert (row["hour"], row["dow"]) == (18, 6)
    angle = 2 * np.pi * 18.5 / 24
    assert (row["hour_sin"], row["hour_cos"]) == pytest.approx((np.sin(angle), np.cos(angle)))


def expected_latest(telemetry: pd.DataFrame, user: str) -> pd.Series:
    hourly = hourly_user_features(telemetry)
    return hourly[hourly["user_id"] == user].iloc[-1]


def assert_online_round_trip(store: FeatureStore, telemetry: pd.DataFrame) -> None:
    online = online_features(store, ["alice", "bob", "nobody"]).set_index("user_id")

    for user in ("alice", "bob"):
        latest = expected_latest(telemetry, user)
        for column in (*RESOURCE_FEATURES, "last_lat", "latency_mean_ms", "distance_from_home_km"):
            assert online.loc[user, column] == pytest.approx(latest[column]), column
        assert online.loc[user, "sample_count"] == latest["sample_count"]
        assert online.loc[user, "last_region"] == latest["last_region"]
        assert online.loc[user, "role"] == "executive"
        assert online.loc[user, "home_region"] == "azure-westeurope"
    assert online.loc["nobody", list(RESOURCE_FEATURES)].isna().all()


def test_online_round_trip_on_sqlite(sqlite_store, telemetry) -> None:
    store, settings = sqlite_store
    assert_online_round_trip(store, telemetry)
    assert (repo_path(settings) / "online_store.db").is_file()


def test_region_status_round_trip(sqlite_store) -> None:
    store, _ = sqlite_store
    catalogue = load_regions()
    codes = list(catalogue.codes[:3])
    online = region_features(store, codes).set_index("region")
    latest = region_status(catalogue, [END], seed=1).set_index("region")

    for code in codes:
        assert online.loc[code, "utilisation"] == pytest.approx(latest.loc[code, "utilisation"])
        assert online.loc[code, "vcpu_hour_usd"] == pytest.approx(catalogue[code].vcpu_hour_usd)


def test_pushed_feedback_is_served_online_and_kept_offline(sqlite_store) -> None:
    store, settings = sqlite_store
    when = pd.Timestamp.now(tz="UTC").floor("s") - timedelta(minutes=1)
    feedback = pd.DataFrame(
        {
            "user_id": ["carol"],
            "event_timestamp": [when],
            "feedback_latency_ms": [42.5],
            "feedback_slo_violation_share": [0.25],
            "feedback_migrations": [3],
        }
    )
    push_feedback(store, feedback)

    online = online_features(store, ["carol"]).iloc[0]
    assert online["feedback_latency_ms"] == pytest.approx(42.5)
    assert online["feedback_migrations"] == 3
    offline = pd.read_parquet(repo_path(settings) / "offline" / "router_feedback.parquet")
    assert offline.loc[offline["user_id"] == "carol", "feedback_slo_violation_share"].item() == 0.25
    later = training_frame(store, entity_rows(["carol"], [when + timedelta(minutes=1)]))
    earlier = training_frame(store, entity_rows(["carol"], [when - timedelta(minutes=1)]))
    assert later["feedback_latency_ms"].item() == pytest.approx(42.5)
    assert np.isnan(earlier["feedback_latency_ms"].item())


def test_materialize_window_clips_a_future_end(sqlite_store, caplog) -> None:
    store, _ = sqlite_store
    with caplog.at_level(logging.WARNING, logger="features.store"):
        materialize_window(store, START, datetime.now(UTC) + timedelta(days=1))
    assert "clipped to now" in caplog.text
    with pytest.raises(ValueError, match="empty materialisation window"):
        materialize_window(store, END, START)


def test_write_offline_is_an_idempotent_upsert(isolated_home, telemetry) -> None:
    hourly = hourly_user_features(telemetry)
    path = write_offline({"user_hourly": hourly})["user_hourly"]
    assert path.is_relative_to(isolated_home)
    first = pd.read_parquet(path)

    write_offline({"user_hourly": hourly})
    again = pd.read_parquet(path)
    assert len(again) == len(first) == len(hourly)

    changed = hourly.head(1).assign(cpu_cores_mean=-1.0)
    write_offline({"user_hourly": changed})
    upserted = pd.read_parquet(path)
    assert len(upserted) == len(hourly)
    key = (upserted["user_id"] == changed["user_id"].item()) & (
        upserted["event_timestamp"] == changed["event_timestamp"].item()
    )
    assert upserted.loc[key, "cpu_cores_mean"].item() == -1.0
    assert (upserted.loc[~key, "cpu_cores_mean"] >= 1.0).all()


def test_write_offline_refuses_unknown_tables_and_missing_columns(telemetry) -> None:
    hourly = hourly_user_features(telemetry)
    with pytest.raises(ValueError, match="unknown offline table"):
        write_offline({"user_hourly_v2": hourly})
    with pytest.raises(ValueError, match="cpu_cores_mean"):
        write_offline({"user_hourly": hourly.drop(columns=["cpu_cores_mean"])})


def test_each_home_has_its_own_store(tmp_path: Path) -> None:
    configs = []
    for name in ("a", "b"):
        settings = scratch_settings(tmp_path / name)
        store = feature_store(settings)
        written = yaml.safe_load((repo_path(settings) / "feature_store.yaml").read_text())
        assert written["online_store"]["path"].startswith(str((tmp_path / name).resolve()))
        assert Path(store.config.registry.path).is_relative_to((tmp_path / name).resolve())
        configs.append(written)
    assert configs[0]["registry"] != configs[1]["registry"]


def test_the_feast_cli_sees_the_same_repository(tmp_path: Path, monkeypatch) -> None:
    settings = scratch_settings(tmp_path, project="prewarm_cli")
    feature_store(settings)
    folder = repo_path(settings)
    monkeypatch.chdir(folder)  # what `feast -c "$PREWARM_HOME/feast"` does
    monkeypatch.syspath_prepend(str(folder))

    config = load_repo_config(folder, folder / "feature_store.yaml")
    contents = parse_repo(folder)

    assert config.project == "prewarm_cli"
    assert Path(config.online_store.path).parent == folder
    found = {(type(obj).__name__, obj.name) for group in contents for obj in group}
    found.discard(("Entity", "__dummy"))  # Feast's own, for entity-less views
    assert found == {(type(obj).__name__, obj.name) for obj in DEFINITIONS}


def test_redis_configuration_comes_from_settings(tmp_path: Path) -> None:
    settings = scratch_settings(
        tmp_path,
        online_store="redis",
        project="prewarm_cfg",
        redis_connection_string="10.0.0.5:6380",
        redis_key_ttl_seconds=600,
    )
    online = feature_store(settings).config.online_store
    assert (online.type, online.connection_string) == ("redis", "10.0.0.5:6380")
    assert online.key_ttl_seconds == 600


@pytest.fixture
def redis_project() -> Iterator[str]:
    """A unique Feast project (the suffix of its Redis keys); its keys are deleted afterwards."""
    project = f"prewarm_test_{uuid.uuid4().hex[:12]}"
    with redis_keys_removed(f"*{project}"):
        yield project


def test_online_round_trip_on_redis(tmp_path: Path, telemetry, redis_project: str) -> None:
    import redis

    settings = scratch_settings(tmp_path, online_store="redis", project=redis_project)
    store = populate(settings, telemetry)
    client = redis.Redis.from_url(REDIS_URL)
    ours = f"*{redis_project}".encode()
    assert len(list(client.scan_iter(match=ours))) == 2 + len(load_regions())

    assert_online_round_trip(store, telemetry)
    assert not (repo_path(settings) / "online_store.db").exists()

    store.teardown()
    assert list(client.scan_iter(match=ours)) == []


def test_a_sql_registry_is_shared_by_every_process_that_points_at_it(
    tmp_path: Path, telemetry, pg_url: str
) -> None:
    import sqlalchemy

    writer = scratch_settings(tmp_path / "writer", registry_url=pg_url, project="prewarm_sql")
    populate(writer, telemetry)
    # Another home (another worker): nothing applied there, the same registry database.
    reader = feature_store(
        scratch_settings(tmp_path / "reader", registry_url=pg_url, project="prewarm_sql")
    )

    assert reader.config.registry.registry_type == "sql"
    assert not (repo_path(writer) / "registry.db").exists()
    registered = {
        (type(obj).__name__, obj.name)
        for group in (
            reader.list_entities(), reader.list_feature_views(),
            reader.list_on_demand_feature_views(), reader.list_feature_services(),
        )
        for obj in group
    }  # fmt: skip
    wanted = {
        (type(obj).__name__, obj.name)
        for obj in DEFINITIONS
        if type(obj).__name__ in {"Entity", "FeatureView", "OnDemandFeatureView", "FeatureService"}
    }
    assert wanted <= registered
    engine = sqlalchemy.create_engine(pg_url)
    with engine.connect() as conn:
        tables = set(sqlalchemy.inspect(conn).get_table_names())
    engine.dispose()
    assert {"feature_views", "feature_services", "entities"} <= tables
