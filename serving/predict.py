"""Batch prediction with the ``@champion`` model: plan shards, predict each, finalise the run.

Three functions, each one Airflow task (the shards fanned out by dynamic task mapping), each
taking and returning small JSON-able dicts:

1. :func:`plan_shards` — finds the newest feature hour and the users active in the model's
   input window, resolves ``@champion`` to a version, decides whether the model can be used,
   and splits the users (sorted) into ranges of ``predict.shard_users``. The plan is written
   to the run's folder; every shard of the run uses the same version and feature hour.
2. :func:`predict_shard` — reads the shard's input windows from the feature store (exactly as
   training reads them, ``serving.predict_features``), forecasts, and writes the predicted
   profile (``profiles``, ``region_probs``) to the predictions store, then pushes one summary
   row per user to the online store (``user_predictions`` view), then writes its manifest.
   A shard whose manifest carries the same key (model version, feature hour, users, mode) is
   done: running it again returns that manifest and writes nothing.
3. :func:`finalize` — refuses unless every planned shard is done; records the run, upserts the
   pushed rows into the offline store, and moves the "latest good predictions" pointer (only
   for runs the model predicted entirely, and never back in time).

Fallbacks are loud: when the champion is missing, stale or does not load, or the features are
older than ``predict.max_feature_age_hours``, profiles come from the last good predictions
(while younger than ``predict.max_prediction_age_hours``; ``source="last_good"``) or else from
recent usage (``source="reactive"``, ``serving.predict_fallback``). Each fallback logs a
WARNING and names its reason in the ``fallback`` field of every summary.

In a DAG: ``shards = plan(run_id, now)``, ``predict_shard.partial(run_id=..., now=...)
.expand(shard=shards)``, then ``finalize(run_id, now)``, all with the run's logical ``now``
(``run_after``) so that retries and backfills see what was known then. A plan with no shards
maps no task, so ``finalize`` should not require all upstream tasks to have succeeded
(``none_failed``): it checks the shards itself.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pandas as pd
import pyarrow as pa
from feast.data_source import PushMode

from core.regions import load_regions
from core.settings import Settings, get_settings
from features.repo.data_sources import user_predictions_push
from features.store import apply_definitions, feature_store, write_offline
from serving import predict_fallback, predict_model
from serving.predict_features import active_users, newest_feature_hour, shard_features
from serving.predict_output import Prediction, concat, online_rows
from serving.predictions_store import (
    PLAN_FILE,
    PROFILES_FILE,
    PUSHED_FILE,
    REGION_PROBS_FILE,
    RUN_FILE,
    SHARD_MANIFEST,
    clear_partial,
    move_latest_good,
    read_json,
    read_latest_good,
    run_dir,
    shard_dir,
    write_json,
    write_table,
)

logger = logging.getLogger(__name__)

# The fields of a planned shard that say what it computes; equal keys mean equal outputs.
KEY_FIELDS: tuple[str, ...] = (
    "run_id",
    "shard",
    "first_user",
    "last_user",
    "feature_timestamp",
    "model_version",
    "mode",
    "last_good_run",
)


class RunIncompleteError(RuntimeError):
    """A run cannot be finalised: it has no plan, or some of its shards are not done."""


# ------------------------------------------------------------------------------ the plan


def plan_shards(run_id: str, now: datetime, settings: Settings | None = None) -> list[dict]:
    """Plan the run's shards (module docstring, step 1); returns them, JSON-able, for XCom.

    Returns an empty list when no user has features in the window (nothing to predict); the
    plan still records why, and :func:`finalize` reports it.
    """
    settings = settings or get_settings()
    now = _utc(now)
    store = feature_store(settings)
    apply_definitions(store)
    service = settings.predict.feature_service
    end = newest_feature_hour(store, service, now)
    current = predict_model.champion(settings)
    reasons = [
        reason
        for reason in (
            _feature_problem(end, now, settings),
            predict_model.model_problem(current, end, settings),
        )
        if reason
    ]
    fallback = "; ".join(reasons) or None
    pointer = read_latest_good(settings)
    mode = "model" if fallback is None else _fallback_mode(pointer, now, settings)
    if end is not None:
        users = active_users(store, service, end, settings.lstm.encoder_length)
    elif mode == "last_good":
        users = sorted(set(predict_fallback.last_good_users(pointer["run_id"], settings)))
    else:
        users = []
    size = settings.predict.shard_users
    chunks = [users[i : i + size] for i in range(0, len(users), size)]
    common = {
        "run_id": run_id,
        "shards": len(chunks),
        "feature_timestamp": None if end is None else end.isoformat(),
        "model_version": None if current is None else current.version,
        "mode": mode,
        "last_good_run": pointer["run_id"] if mode == "last_good" else None,
        "fallback": fallback,
        "planned_at": now.isoformat(),
    }
    shards = [
        {**common, "shard": i, "first_user": c[0], "last_user": c[-1], "users": len(c)}
        for i, c in enumerate(chunks)
    ]
    write_json(run_dir(run_id, settings) / PLAN_FILE, {**common, "plan": shards})
    if fallback:
        logger.warning("prediction run %s falls back to %s: %s", run_id, mode, fallback)
    return shards


def _feature_problem(end: pd.Timestamp | None, now: pd.Timestamp, settings: Settings) -> str | None:
    """Why the features cannot be used (none, or stale), or None when they are fresh."""
    if end is None:
        return f"the offline store holds no hourly features up to {now.isoformat()}"
    age = (now - end) / pd.Timedelta(hours=1)
    if age > settings.predict.max_feature_age_hours:
        return (
            f"features are stale: the newest hour ended {end.isoformat()}, {age:.1f} h before "
            f"{now.isoformat()} (max {settings.predict.max_feature_age_hours:g} h)"
        )
    return None


def _fallback_mode(pointer: dict | None, now: pd.Timestamp, settings: Settings) -> str:
    return "last_good" if predict_fallback.is_fresh(pointer, now, settings) else "reactive"


# ------------------------------------------------------------------------------ one shard


def predict_shard(
    shard: dict, run_id: str, now: datetime, settings: Settings | None = None
) -> dict:
    """Predict, store and push one planned shard (module docstring, step 2); its summary.

    The summary is the shard's manifest plus ``skipped`` (True when it was done already).
    """
    settings = settings or get_settings()
    now = _utc(now)
    if shard["run_id"] != run_id:
        raise ValueError(f"shard {shard['shard']} was planned for run {shard['run_id']!r}")
    folder = shard_dir(run_id, shard["shard"], settings)
    done = read_json(folder / SHARD_MANIFEST)
    if done is not None and done["key"] == _key(shard):
        logger.info("shard %s of run %s is done already; nothing to do", shard["shard"], run_id)
        return {**done, "skipped": True}

    clear_partial(folder)
    store = feature_store(settings)
    stages: dict[str, float] = {}
    prediction, fallback, from_online = _predict(shard, now, store, settings, stages)
    with _timed(stages, "write"):
        write_table(prediction.profiles, folder / PROFILES_FILE)
        write_table(prediction.region_probs, folder / REGION_PROBS_FILE)
    with _timed(stages, "online"):
        pushed = online_rows(prediction, now)
        write_table(pa.Table.from_pandas(pushed, preserve_index=False), folder / PUSHED_FILE)
        if len(pushed):
            store.push(user_predictions_push.name, pushed, to=PushMode.ONLINE)

    users = prediction.users
    manifest = {
        "key": _key(shard),
        "run_id": run_id,
        "shard": shard["shard"],
        "model_version": shard["model_version"],
        "feature_timestamp": shard["feature_timestamp"],
        "predicted_at": now.isoformat(),
        "users_planned": shard["users"],
        "users": len(users),
        "rows": prediction.profiles.num_rows,
        "region_rows": prediction.region_probs.num_rows,
        "sources": prediction.sources(),
        "fallback": fallback,
        "latest_hour_from_online": from_online,
        "stage_seconds": {name: round(seconds, 4) for name, seconds in stages.items()},
    }
    if fallback:
        logger.warning(
            "shard %s of run %s: %s",
            shard["shard"],
            run_id,
            _describe(manifest["sources"], fallback),
        )
    write_json(folder / SHARD_MANIFEST, manifest)
    return {**manifest, "skipped": False}


def _predict(
    shard: dict, now: pd.Timestamp, store, settings: Settings, stages: dict[str, float]
) -> tuple[Prediction, str | None, int]:
    """The shard's prediction, the fallback reason (None: the model's), users read online.

    Adds the seconds spent loading the model, reading features, in the model and building the
    tables to ``stages``.
    """
    mode, fallback = shard["mode"], shard["fallback"]
    end = None if shard["feature_timestamp"] is None else pd.Timestamp(shard["feature_timestamp"])
    catalogue = load_regions(settings.regions_file)
    service = settings.predict.feature_service
    span = (shard["first_user"], shard["last_user"])

    if mode == "model":
        try:
            with _timed(stages, "model_load"):
                forecaster = predict_model.load_forecaster(shard["model_version"], settings)
        except Exception as error:  # any failure to load must fall back, loudly, not crash
            fallback = f"champion v{shard['model_version']} could not be loaded: {error!r}"
            mode = _fallback_mode(read_latest_good(settings), now, settings)
        else:
            length = forecaster.config.encoder_length
            with _timed(stages, "features"):
                features = shard_features(store, service, end, length, catalogue, *span)
            top_k = settings.predict.region_top_k
            version = shard["model_version"]
            prediction = predict_model.forecast(forecaster, features, version, top_k, stages)
            return prediction, None, features.from_online

    started = time.perf_counter()
    parts, from_online = [], 0
    users_covered: list[str] = []
    if mode == "last_good":
        run = shard["last_good_run"] or read_latest_good(settings)["run_id"]
        good = predict_fallback.last_good(run, *span, now, settings)
        parts.append(good)
        users_covered = good.users
    if end is not None:
        features = shard_features(
            store, service, end, settings.lstm.encoder_length, catalogue, *span
        )
        from_online = features.from_online
        missing = None
        if features.panel is not None and users_covered:
            missing = sorted(set(features.panel.series_ids) - set(users_covered))
        first_target = max(end, now.floor("h"))
        reactive = predict_fallback.reactive(
            features, first_target, settings.lstm.horizon, settings, catalogue.codes, missing
        )
        parts.append(reactive)
    prediction = concat(parts)
    stages["fallback"] = time.perf_counter() - started
    return prediction, fallback, from_online


@contextmanager
def _timed(stages: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the block takes to ``stages[name]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - started


def _key(shard: dict) -> dict:
    return {name: shard.get(name) for name in KEY_FIELDS}


def _describe(sources: dict[str, int], fallback: str) -> str:
    counts = ", ".join(f"{n} user(s) {source}" for source, n in sorted(sources.items()))
    return f"fell back ({counts or 'no users'}) because {fallback}"


# ------------------------------------------------------------------------------ the run


def finalize(run_id: str, now: datetime, settings: Settings | None = None) -> dict:
    """Check every planned shard is done, record the run, move the latest-good pointer.

    Raises RunIncompleteError (and moves nothing) when the run has no plan or a shard is
    missing, or was done for another plan. Idempotent.
    """
    settings = settings or get_settings()
    now = _utc(now)
    folder = run_dir(run_id, settings)
    plan = read_json(folder / PLAN_FILE)
    if plan is None:
        raise RunIncompleteError(f"prediction run {run_id!r} has no plan ({folder / PLAN_FILE})")
    manifests, missing = [], []
    for shard in plan["plan"]:
        manifest = read_json(shard_dir(run_id, shard["shard"], settings) / SHARD_MANIFEST)
        if manifest is None or manifest["key"] != _key(shard):
            missing.append(shard["shard"])
        else:
            manifests.append(manifest)
    if missing:
        raise RunIncompleteError(
            f"prediction run {run_id!r}: shard(s) {missing} of {len(plan['plan'])} are not done "
            "(missing, or written for another plan); not finalised"
        )

    sources: Counter[str] = Counter()
    for manifest in manifests:
        sources.update(manifest["sources"])
    reasons = [plan["fallback"], *(m["fallback"] for m in manifests)]
    fallback = "; ".join(dict.fromkeys(r for r in reasons if r)) or None
    users = sum(m["users"] for m in manifests)
    if users == 0 and fallback is None:
        fallback = "no user has features in the model's input window"
    _store_offline_copy(run_id, plan["plan"], settings)
    good = fallback is None and set(sources) == {"model"}
    record = {
        "run_id": run_id,
        "predicted_at": plan["planned_at"],
        "finalized_at": now.isoformat(),
        "feature_timestamp": plan["feature_timestamp"],
        "model_version": plan["model_version"] if good else None,
        "shards": len(manifests),
        "users": users,
        "rows": sum(m["rows"] for m in manifests),
        "sources": dict(sources),
        "fallback": fallback,
        "good": good,
    }
    write_json(folder / RUN_FILE, record)
    moved = move_latest_good(record, settings) if good else False
    if fallback:
        logger.warning("prediction run %s finalised with a fallback: %s", run_id, fallback)
    pointer = read_latest_good(settings)
    return {**record, "latest_good_run": pointer["run_id"] if pointer else None, "moved": moved}


def _store_offline_copy(run_id: str, shards: list[dict], settings: Settings) -> None:
    """Upsert the rows the shards pushed online into the ``user_predictions`` offline table."""
    files = [shard_dir(run_id, s["shard"], settings) / PUSHED_FILE for s in shards]
    frames = [pd.read_parquet(f) for f in files if f.exists()]
    frames = [f for f in frames if len(f)]
    if frames:
        write_offline({"user_predictions": pd.concat(frames, ignore_index=True)}, settings)


def _utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
