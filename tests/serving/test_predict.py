"""Batch prediction end to end on a small simulated world: plan, shards, finalise, fallbacks."""

from __future__ import annotations

import logging
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.regions import load_regions
from core.schema import RESOURCE_COLUMNS
from features.repo.feature_views import PREDICTION_FEATURES
from features.store import feature_store, repo_path
from serving.predict import RunIncompleteError, finalize, plan_shards, predict_shard
from serving.predictions_store import (
    PredictionsNotFoundError,
    read_latest_good,
    read_predictions,
    shard_dir,
)
from tests.serving.predict_world import HORIZON, USERS, PredictWorld, build_world
from training import registry

PROFILE_COLUMNS = [
    "user_id",
    "step",
    "target_hour",
    *(f"{r}_{q}" for r in RESOURCE_COLUMNS for q in ("p50", "p90")),
    "cold_start",
    "model_version",
    "feature_timestamp",
    "source",
]
REGION_COLUMNS = ["user_id", "step", "region", "probability"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> PredictWorld:
    return build_world(tmp_path_factory.mktemp("predict-world") / "home")


def run(settings, run_id: str, now: pd.Timestamp) -> tuple[list[dict], list[dict], dict]:
    """Plan, predict every shard and finalise one run; returns the three kinds of summary."""
    shards = plan_shards(run_id, now, settings)
    summaries = [predict_shard(shard, run_id, now, settings) for shard in shards]
    return shards, summaries, finalize(run_id, now, settings)


def test_predictions_are_stored_and_pushed_with_the_contracts_columns(world, tmp_path) -> None:
    settings = world.settings(tmp_path / "home", shard_users=4)
    now = world.end + timedelta(minutes=30)
    shards, summaries, final = run(settings, "r1", now)

    assert [s["users"] for s in shards] == [4, USERS - 4]
    assert all(s["fallback"] is None and not s["skipped"] for s in summaries)
    assert final["good"] and final["moved"] and final["fallback"] is None
    assert final["latest_good_run"] == "r1" and final["sources"] == {"model": USERS}

    profiles, regions = read_predictions(settings=settings)
    assert list(profiles.columns) == PROFILE_COLUMNS
    assert list(regions.columns) == REGION_COLUMNS
    assert len(profiles) == USERS * HORIZON
    assert (
        profiles.groupby("user_id")["step"]
        .apply(list)
        .map(lambda s: s == list(range(1, HORIZON + 1)))
        .all()
    )
    assert str(profiles["target_hour"].dt.tz) == "UTC"
    first = profiles[profiles["step"] == 1]
    assert (first["target_hour"] == world.end).all()  # the hour right after the features
    assert (profiles["feature_timestamp"] == world.end).all()
    assert isinstance(profiles["user_id"].iloc[0], str)
    for resource in RESOURCE_COLUMNS:
        assert (profiles[f"{resource}_p50"] >= 0).all()
        assert (profiles[f"{resource}_p90"] >= profiles[f"{resource}_p50"]).all()
    assert profiles["cold_start"].dtype == bool and not profiles["cold_start"].any()
    assert (profiles["model_version"] == world.version).all()
    assert (profiles["source"] == "model").all()

    k = settings.predict.region_top_k
    assert len(regions) == USERS * HORIZON * k
    assert regions["region"].isin(load_regions().codes).all()
    assert regions["probability"].between(0, 1).all()
    per_step = regions.groupby(["user_id", "step"])["probability"]
    assert (per_step.sum() <= 1 + 1e-6).all()
    assert per_step.apply(lambda p: list(p) == sorted(p, reverse=True)).all()

    store = feature_store(settings)
    online = store.get_online_features(
        features=store.get_feature_service("predictions"),
        entity_rows=[{"user_id": u} for u in sorted(first["user_id"])],
    ).to_df()
    online = online.set_index("user_id").loc[sorted(first["user_id"])]
    expected = first.set_index("user_id").loc[online.index]
    assert online["cpu_cores_p90_next"].to_numpy() == pytest.approx(
        expected["cpu_cores_p90"].to_numpy()
    )
    peak = profiles.groupby("user_id")["ram_gb_p90"].max().loc[online.index]
    assert online["ram_gb_p90_peak"].to_numpy() == pytest.approx(peak.to_numpy())
    top = regions[regions["step"] == 1].groupby("user_id")["region"].first()
    assert (online["region_next"] == top.loc[online.index]).all()
    assert (online["model_version"] == world.version).all()
    assert (online["prediction_source"] == "model").all()
    assert (online["horizon_hours"] == HORIZON).all()

    offline = pd.read_parquet(repo_path(settings) / "offline" / "user_predictions.parquet")
    assert sorted(offline["user_id"]) == sorted(first["user_id"])
    assert set(PREDICTION_FEATURES) <= set(offline.columns)


def test_rerunning_a_finished_shard_redoes_and_duplicates_nothing(world, tmp_path) -> None:
    settings = world.settings(tmp_path / "home", shard_users=4)
    now = world.end + timedelta(minutes=30)
    shards = plan_shards("r1", now, settings)
    first = predict_shard(shards[0], "r1", now, settings)
    folder = shard_dir("r1", 0, settings)
    written = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    again = predict_shard(plan_shards("r1", now, settings)[0], "r1", now, settings)

    assert again["skipped"] and not first["skipped"]
    assert {k: v for k, v in again.items() if k != "skipped"} == {
        k: v for k, v in first.items() if k != "skipped"
    }
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == written
    predict_shard(shards[1], "r1", now, settings)
    final = finalize("r1", now, settings)
    assert final["rows"] == USERS * HORIZON
    assert finalize("r1", now, settings)["rows"] == final["rows"]  # finalising is idempotent
    profiles, _ = read_predictions("r1", settings)
    assert not profiles.duplicated(["user_id", "step"]).any()


def test_finalize_refuses_a_run_with_a_shard_missing(world, tmp_path) -> None:
    settings = world.settings(tmp_path / "home", shard_users=4)
    now = world.end + timedelta(minutes=30)
    shards = plan_shards("r1", now, settings)
    predict_shard(shards[1], "r1", now, settings)

    with pytest.raises(RunIncompleteError, match=r"shard\(s\) \[0\] of 2"):
        finalize("r1", now, settings)
    assert read_latest_good(settings) is None
    with pytest.raises(PredictionsNotFoundError):
        read_predictions("r1", settings)
    with pytest.raises(RunIncompleteError, match="no plan"):
        finalize("never-planned", now, settings)


def test_without_a_champion_the_last_good_predictions_stand_in_loudly(
    world, tmp_path, caplog
) -> None:
    settings = world.settings(tmp_path / "home")
    now = world.end + timedelta(minutes=30)
    run(settings, "good", now)
    client = registry.client(settings)
    client.delete_registered_model_alias(settings.mlflow.model_name, "champion")

    later = now + timedelta(hours=1)
    with caplog.at_level(logging.WARNING, logger="serving.predict"):
        shards, summaries, final = run(settings, "no-champion", later)

    reason = "no @champion version of model 'prewarm-profile'"
    assert all(s["mode"] == "last_good" and reason in s["fallback"] for s in shards)
    assert all(reason in s["fallback"] for s in summaries)
    assert reason in final["fallback"] and not final["good"] and not final["moved"]
    assert final["latest_good_run"] == "good"  # a fallback run never becomes "good"
    assert reason in caplog.text
    assert final["sources"] == {"last_good": USERS}

    profiles, regions = read_predictions("no-champion", settings)
    good, _ = read_predictions("good", settings)
    assert (profiles["source"] == "last_good").all()
    assert (profiles["target_hour"] >= later.floor("h")).all()
    kept = good[good["target_hour"] >= later.floor("h")]
    assert len(profiles) == len(kept) == USERS * (HORIZON - 1)
    assert profiles["cpu_cores_p90"].to_numpy() == pytest.approx(kept["cpu_cores_p90"].to_numpy())
    assert set(regions["step"]) == set(profiles["step"])


def test_a_backfill_never_borrows_predictions_made_after_its_time(world, tmp_path) -> None:
    settings = world.settings(tmp_path / "home")
    now = world.end + timedelta(minutes=30)
    run(settings, "today", now)
    registry.client(settings).delete_registered_model_alias(settings.mlflow.model_name, "champion")

    shards = plan_shards("backfill", world.end - timedelta(hours=2, minutes=30), settings)

    assert shards and all(s["mode"] == "reactive" for s in shards)


def test_without_a_champion_or_good_predictions_the_reactive_profile_is_used(
    world, tmp_path
) -> None:
    settings = world.settings(tmp_path / "home", reactive_hours=24)
    client = registry.client(settings)
    client.delete_registered_model_alias(settings.mlflow.model_name, "champion")
    now = world.end + timedelta(minutes=30)
    shards, _, final = run(settings, "r1", now)

    assert all(s["mode"] == "reactive" for s in shards)
    assert "no @champion" in final["fallback"] and final["sources"] == {"reactive": USERS}
    profiles, regions = read_predictions("r1", settings)
    assert (profiles["model_version"] == "none").all()
    assert len(profiles) == USERS * settings.lstm.horizon

    # p50/p90: median and 95th percentile of the last 24 hourly means, flat over the horizon.
    user = profiles["user_id"].iloc[0]
    telemetry = world.telemetry[world.telemetry["user_id"] == user]
    hourly = telemetry.set_index("event_timestamp")["cpu_cores"].resample("h").mean()
    recent = hourly[hourly.index >= world.end - timedelta(hours=24)].to_numpy()
    mine = profiles[profiles["user_id"] == user]
    assert mine["cpu_cores_p50"].to_numpy() == pytest.approx(np.median(recent), rel=1e-5)
    assert mine["cpu_cores_p90"].to_numpy() == pytest.approx(np.quantile(recent, 0.95), rel=1e-5)
    # The user's current region, with probability 1.
    assert (regions.groupby(["user_id", "step"]).size() == 1).all()
    assert (regions["probability"] == 1.0).all()


def test_stale_features_fall_back_to_the_last_good_then_to_reactive(world, tmp_path) -> None:
    settings = world.settings(tmp_path / "home", max_feature_age_hours=3)
    fresh = world.end + timedelta(minutes=30)
    run(settings, "good", fresh)

    stale = world.end + timedelta(hours=5)
    shards, _, final = run(settings, "stale", stale)
    assert all(s["mode"] == "last_good" for s in shards)
    assert "features are stale" in final["fallback"] and final["sources"] == {"last_good": USERS}
    profiles, _ = read_predictions("stale", settings)
    assert profiles["step"].min() == 6 and (profiles["target_hour"] >= stale.floor("h")).all()

    too_late = world.end + timedelta(hours=settings.predict.max_prediction_age_hours + 2)
    shards, _, final = run(settings, "later", too_late)
    assert all(s["mode"] == "reactive" for s in shards)
    assert "features are stale" in final["fallback"] and final["sources"] == {"reactive": USERS}
    profiles, _ = read_predictions("later", settings)
    assert (profiles["target_hour"] >= too_late.floor("h")).all()
    assert read_latest_good(settings)["run_id"] == "good"


def test_a_champion_trained_on_old_data_is_stale(world, tmp_path) -> None:
    settings = world.settings(tmp_path / "home", max_model_data_age_days=0.5)
    now = world.end + timedelta(minutes=30)
    shards = plan_shards("r1", now, settings)
    assert shards and all(s["mode"] == "reactive" for s in shards)
    assert f"champion v{world.version} is stale" in shards[0]["fallback"]


def test_a_champion_that_does_not_load_falls_back_in_the_shard(world, tmp_path) -> None:
    settings = world.settings(tmp_path / "home")
    now = world.end + timedelta(minutes=30)
    shards = plan_shards("r1", now, settings)
    broken = {**shards[0], "model_version": "999"}  # planned, then gone from the registry

    summary = predict_shard(broken, "r1", now, settings)

    assert "champion v999 could not be loaded" in summary["fallback"]
    assert summary["sources"] == {"reactive": USERS}
