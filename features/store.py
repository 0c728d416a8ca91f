"""Feast wiring: the feature store of one PREWARM_HOME, its offline tables, and the reads on it.

Everything the store keeps lives in ``$PREWARM_HOME/feast`` (:func:`repo_path`): the file
registry, the offline Parquet tables, the SQLite online store (or, by configuration, keys in
Redis suffixed with the project name), and a ``feature_store.yaml`` rendered from the settings
so that the ``feast`` command can be pointed at the same folder.

The calls, in the order the ingest DAG makes them::

    store = feature_store()
    apply_definitions(store)                      # register entities, views, services
    write_offline({"user_hourly": hourly, ...})   # idempotent upsert of the offline tables
    materialize_window(store, start, end)         # offline -> online for the run's window
    training_frame(store, entity_df)              # point-in-time correct training set
    online_features(store, user_ids)              # latest features for serving

Point-in-time semantics: a training row ``(user, t)`` is joined to the latest feature row of
each view with ``t - ttl <= event_timestamp <= t`` (both inclusive); since aggregates are
stamped at the end of their hour (see ``features.aggregate``), nothing observed after ``t``
reaches the row.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from feast import FeatureService, FeatureStore, OnDemandFeatureView, RepoConfig
from feast.data_source import PushMode
from feast.types import Bool, Float64, Int64, String

from core.settings import FeastSettings, Settings, get_settings
from features.aggregate import (
    REGION_KEY,
    TIMESTAMP,
    USER_KEY,
    hourly_user_features,
    user_profiles,
)
from features.repo.data_sources import CREATED, OFFLINE_TABLES, router_feedback_push
from features.repo.definitions import DEFINITIONS
from features.repo.feature_views import ALL_VIEWS
from features.repo.on_demand import REQUEST_TIMESTAMP

logger = logging.getLogger(__name__)

CLI_DEFINITIONS_MODULE = "prewarm_definitions.py"
_ARROW_TYPES = {Float64: pa.float64(), Int64: pa.int64(), Bool: pa.bool_(), String: pa.string()}
_UTC_NS = pa.timestamp("ns", tz="UTC")
_ROW_ID = "__prewarm_row__"
# Feature services as resolved from each store's registry; dropped when definitions are applied.
_SERVICES: weakref.WeakKeyDictionary[FeatureStore, dict[str, FeatureService]] = (
    weakref.WeakKeyDictionary()
)


def repo_path(settings: Settings | None = None) -> Path:
    """The Feast repository folder of this home: ``$PREWARM_HOME/feast`` (absolute)."""
    settings = settings if settings is not None else get_settings()
    return (settings.home / "feast").resolve()


def repo_config(settings: Settings | None = None) -> dict[str, Any]:
    """The Feast repository configuration (the content of ``feature_store.yaml``) for settings.

    Online store: SQLite in the repository folder, or Redis when
    ``settings.feast.online_store == "redis"``; Feast suffixes every Redis key with the project
    name, so distinct projects share one Redis without touching each other's keys. Registry: a
    file in the repository folder, or a SQL database (``settings.feast.registry_url``) that
    every worker and the feature server share.
    """
    settings = settings if settings is not None else get_settings()
    feast_settings = settings.feast
    folder = repo_path(settings)
    if feast_settings.online_store == "redis":
        online: dict[str, Any] = {
            "type": "redis",
            "connection_string": feast_settings.redis_connection_string,
        }
        if feast_settings.redis_key_ttl_seconds is not None:
            online["key_ttl_seconds"] = feast_settings.redis_key_ttl_seconds
    else:
        online = {"type": "sqlite", "path": str(folder / "online_store.db")}
    return {
        "project": feast_settings.project,
        "provider": "local",
        "registry": _registry(feast_settings, folder),
        "online_store": online,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def _registry(feast_settings: FeastSettings, folder: Path) -> dict[str, Any]:
    """A file registry in the repository folder, or the SQL registry at ``registry_url``."""
    if feast_settings.registry_url is None:
        return {"registry_type": "file", "path": str(folder / "registry.db")}
    return {
        "registry_type": "sql",
        "path": feast_settings.registry_url,
        "cache_ttl_seconds": feast_settings.registry_cache_ttl_seconds,
        "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
    }


def feature_store(settings: Settings | None = None) -> FeatureStore:
    """The feature store of this home, configured from settings (online SQLite or Redis).

    Also writes ``feature_store.yaml`` and a module importing the definitions into the
    repository folder, so ``feast -c "$PREWARM_HOME/feast" ...`` sees the same store.
    """
    settings = settings if settings is not None else get_settings()
    folder = repo_path(settings)
    folder.mkdir(parents=True, exist_ok=True)
    config = repo_config(settings)
    _write_if_changed(folder / "feature_store.yaml", yaml.safe_dump(config, sort_keys=False))
    _write_if_changed(
        folder / CLI_DEFINITIONS_MODULE,
        '"""Lets the feast CLI see prewarm\'s definitions."""\n\n'
        "from features.repo.definitions import *  # noqa: F403\n",
    )
    return FeatureStore(repo_path=str(folder), config=RepoConfig(repo_path=folder, **config))


def apply_definitions(store: FeatureStore) -> None:
    """Register every entity, source, view and service, creating empty offline tables if absent.

    Idempotent. The empty tables let materialisation and training run before the first write
    (for example the push source's table, which only the router fills).
    """
    folder = Path(store.repo_path)
    for table in OFFLINE_TABLES:
        path = _table_path(folder, table)
        if not path.exists():
            schema = _table_schema(table)
            _write_table(schema.empty_table().to_pandas(), path, schema)
    store.apply(DEFINITIONS)
    _SERVICES.pop(store, None)


def write_offline(
    tables: dict[str, pd.DataFrame], settings: Settings | None = None
) -> dict[str, Path]:
    """Upsert feature tables into the offline store; returns the path written per table.

    ``tables`` maps an offline table name (``user_hourly``, ``user_profile``,
    ``region_status``, ``router_feedback``) to a frame with its entity key, ``event_timestamp``
    and feature columns (other columns are ignored). Rows are merged with what the table
    already holds: for each (entity, ``event_timestamp``) the newest write wins, so re-writing
    a batch is a no-op on the content. Each row's ``created`` column records when it was
    written. A table is one Parquet file, rewritten whole (atomically) on each call.
    """
    folder = repo_path(settings)
    written: dict[str, Path] = {}
    for table, frame in tables.items():
        if table not in OFFLINE_TABLES:
            raise ValueError(f"unknown offline table {table!r}; known: {sorted(OFFLINE_TABLES)}")
        _, key = OFFLINE_TABLES[table]
        schema = _table_schema(table)
        missing = [name for name in schema.names if name not in frame.columns and name != CREATED]
        if missing:
            raise ValueError(f"table {table!r} lacks columns {missing}")
        new = frame.loc[:, [n for n in schema.names if n != CREATED]].copy()
        new[TIMESTAMP] = pd.to_datetime(new[TIMESTAMP], utc=True)
        new[CREATED] = pd.Timestamp.now(tz="UTC")
        path = _table_path(folder, table)
        if path.exists():
            old = pd.read_parquet(path)
            if len(old):
                new = pd.concat([old, new], ignore_index=True)
        merged = new.drop_duplicates([key, TIMESTAMP], keep="last")
        _write_table(merged.sort_values([key, TIMESTAMP], ignore_index=True), path, schema)
        written[table] = path
    return written


def materialize_window(store: FeatureStore, start: datetime, end: datetime) -> None:
    """Load the feature rows stamped in [start, end] into the online store.

    An ``end`` in the future is clipped to now, with a warning: materialising ahead of time
    would record a watermark later runs cannot get past (the ``materialize_incremental``
    pitfall), so this uses ``materialize(start, end)`` for the run's window only. Naive
    datetimes are taken as UTC.
    """
    start, end = _utc(start), _utc(end)
    now = datetime.now(UTC)
    if end > now:
        logger.warning("materialize_window: end %s is in the future; clipped to now (%s)", end, now)
        end = now
    if start >= end:
        raise ValueError(f"empty materialisation window: start {start} >= end {end}")
    store.materialize(start_date=start, end_date=end)


def training_frame(
    store: FeatureStore, entity_df: pd.DataFrame, service: str = "training"
) -> pd.DataFrame:
    """Point-in-time correct features of a service for each (user_id, event_timestamp) row.

    Each row gets, per view, the latest feature row stamped at or before its
    ``event_timestamp`` and within the view's TTL (NaN/null if none), and the time encodings of
    its ``event_timestamp``. Every entity row comes back exactly once, with any extra columns
    (labels, ...) passed through, sorted by user and time.

    The views are joined one at a time: Feast 0.67's file offline store drops an entity row
    from the whole result when a view holds rows for that entity but none inside
    [t - ttl, t] (a row before the user's first aggregate, or after a gap longer than the
    TTL). Joined separately, such a row only gets nulls for that view.
    """
    missing = {USER_KEY, TIMESTAMP} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df lacks columns {sorted(missing)}")
    rows = entity_df.reset_index(drop=True)
    rows[TIMESTAMP] = pd.to_datetime(rows[TIMESTAMP], utc=True)
    if REQUEST_TIMESTAMP not in rows.columns:
        rows[REQUEST_TIMESTAMP] = rows[TIMESTAMP]
    rows[_ROW_ID] = range(len(rows))
    keys = rows[[_ROW_ID, USER_KEY, TIMESTAMP]]
    projections = _service(store, service).feature_view_projections
    on_demand = {view.name: view for view in store.list_on_demand_feature_views(allow_cache=True)}
    out = rows
    for projection in (p for p in projections if p.name not in on_demand):
        names = [feature.name for feature in projection.features]
        refs = [f"{projection.name_to_use()}:{name}" for name in names]
        with warnings.catch_warnings():
            # Feast's internal joins mix string dtypes of the key; the values are the same.
            warnings.filterwarnings("ignore", message="Merging dataframes with merge column")
            joined = store.get_historical_features(entity_df=keys, features=refs).to_df()
        joined = joined.drop_duplicates(_ROW_ID).loc[:, [_ROW_ID, *names]]
        out = out.merge(joined, on=_ROW_ID, how="left")
    for projection in (p for p in projections if p.name in on_demand):
        # What Feast's retrieval job does with on-demand views, on the complete rows.
        view = on_demand[projection.name]
        names = [feature.name for feature in projection.features]
        inputs = pa.Table.from_pandas(out[_on_demand_inputs(view)], preserve_index=False)
        transformed = view.transform_arrow(inputs, full_feature_names=False)
        out[names] = transformed.select(names).to_pandas()
    out = out.sort_values([USER_KEY, TIMESTAMP, _ROW_ID], ignore_index=True)
    return out.drop(columns=_ROW_ID)


def online_features(
    store: FeatureStore,
    user_ids: Sequence[str],
    service: str = "serving",
    at: datetime | None = None,
) -> pd.DataFrame:
    """The latest materialised features of a service for each user, one row per user id.

    ``at`` (default: now) is the moment the time encodings describe. Users unknown to the
    online store get nulls.
    """
    when = _utc(at) if at is not None else datetime.now(UTC)
    rows = [{USER_KEY: user_id, REQUEST_TIMESTAMP: when} for user_id in user_ids]
    return _online(store, service, rows, USER_KEY)


def region_features(
    store: FeatureStore, regions: Sequence[str], service: str = "regions"
) -> pd.DataFrame:
    """The latest materialised status of each region (utilisation, free vCPU, prices)."""
    rows = [{REGION_KEY: code} for code in regions]
    return _online(store, service, rows, REGION_KEY)


def push_feedback(store: FeatureStore, feedback: pd.DataFrame) -> None:
    """Push the router's feedback rows to the online store and the offline table at once.

    ``feedback`` has ``user_id``, ``event_timestamp`` and the ``router_feedback`` view's
    features; ``created`` is added.
    """
    rows = feedback.copy()
    rows[TIMESTAMP] = pd.to_datetime(rows[TIMESTAMP], utc=True)
    rows[CREATED] = pd.Timestamp.now(tz="UTC")
    store.push(router_feedback_push.name, rows, to=PushMode.ONLINE_AND_OFFLINE)


def benchmark_online(
    telemetry: pd.DataFrame, settings: Settings | None = None, batch_repeats: int = 5
) -> dict[str, Any]:
    """Measure the feature pipeline on ``telemetry`` in the store of ``settings``.

    Aggregates the telemetry (rows/s), writes and materialises the user tables (seconds), then
    reads the serving features once per user (p50/p99 latency of single-user requests) and
    ``batch_repeats`` times for all users at once. Online keys stay in the store; point
    ``settings`` at a scratch home (and, for Redis, a scratch project) and tear it down after.
    """
    settings = settings if settings is not None else get_settings()
    started = time.perf_counter()
    hourly = hourly_user_features(telemetry)
    profiles = user_profiles(telemetry)
    aggregate_s = time.perf_counter() - started

    store = feature_store(settings)
    apply_definitions(store)
    write_offline({"user_hourly": hourly, "user_profile": profiles}, settings)
    start = min(hourly[TIMESTAMP].min(), profiles[TIMESTAMP].min()).to_pydatetime()
    end = max(hourly[TIMESTAMP].max(), profiles[TIMESTAMP].max()).to_pydatetime()
    started = time.perf_counter()
    materialize_window(store, start, end)
    materialize_s = time.perf_counter() - started

    users = sorted(hourly[USER_KEY].unique())
    single_ms = [_timed_ms(online_features, store, [user], at=end) for user in users]
    batch_ms = [_timed_ms(online_features, store, users, at=end) for _ in range(batch_repeats)]
    percentiles = statistics.quantiles(single_ms, n=100, method="inclusive")
    return {
        "online_store": settings.feast.online_store,
        "users": len(users),
        "telemetry_rows": len(telemetry),
        "hourly_rows": len(hourly),
        "aggregate_seconds": aggregate_s,
        "aggregate_rows_per_s": len(telemetry) / aggregate_s,
        "materialize_seconds": materialize_s,
        "online_p50_ms": percentiles[49],
        "online_p99_ms": percentiles[98],
        "online_batch_median_ms": statistics.median(batch_ms),
    }


def _online(
    store: FeatureStore, service: str, rows: list[dict[str, Any]], key: str
) -> pd.DataFrame:
    """Online features of a service for entity rows: the key, then features in service order."""
    feature_service = _service(store, service)
    response = store.get_online_features(features=feature_service, entity_rows=rows)
    names = [
        feature.name
        for projection in feature_service.feature_view_projections
        for feature in projection.features
    ]
    return response.to_df().loc[:, [key, *names]]


def _on_demand_inputs(view: OnDemandFeatureView) -> list[str]:
    """The columns an on-demand view reads: its request fields and its source features."""
    request = [f.name for source in view.source_request_sources.values() for f in source.schema]
    features = [
        f.name for source in view.source_feature_view_projections.values() for f in source.features
    ]
    return request + features


def _service(store: FeatureStore, name: str) -> FeatureService:
    """The feature service ``name``, resolved once per store (rebuilding it costs ~15 ms)."""
    services = _SERVICES.setdefault(store, {})
    if name not in services:
        services[name] = store.get_feature_service(name, allow_cache=True)
    return services[name]


def _timed_ms(call: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Wall-clock milliseconds of one ``call(*args, **kwargs)``."""
    started = time.perf_counter()
    call(*args, **kwargs)
    return (time.perf_counter() - started) * 1000.0


def _utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; naive values are taken as UTC."""
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def _table_path(folder: Path, table: str) -> Path:
    source, _ = OFFLINE_TABLES[table]
    return folder / source.path


def _table_schema(table: str) -> pa.Schema:
    """Arrow schema of an offline table: entity key, timestamps, then the views' features."""
    source, key = OFFLINE_TABLES[table]
    fields = [pa.field(key, pa.string()), pa.field(TIMESTAMP, _UTC_NS)]
    for view in ALL_VIEWS:
        if view.batch_source.name == source.name:
            fields += [pa.field(f.name, _ARROW_TYPES[f.dtype]) for f in view.features]
    fields.append(pa.field(CREATED, _UTC_NS))
    return pa.schema(fields)


def _write_table(frame: pd.DataFrame, path: Path, schema: pa.Schema) -> None:
    """Write ``frame`` as one Parquet file, atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
