"""The training panel from the Feast offline store, joined point in time.

Training reads what the feature store holds, through the views of a feature service (by default
``training``), with Feast's point-in-time semantics: an entity row ``(user, t)`` gets, from each
view, the latest row stamped ``t - ttl <= event_timestamp <= t`` (no lower bound when the TTL is
0), ties between rows of the same stamp going to the latest ``created``; nothing known after
``t`` reaches it.

Feast's own ``get_historical_features`` on the file offline store (dask) builds about a thousand
rows a second, far too slow for a nightly panel of millions of (user, hour) rows. So
:func:`point_in_time_join` performs the same join with ``pandas.merge_asof`` over the *same*
batch sources, which it finds through the Feast registry (the feature service's views, their
``FileSource`` paths, timestamp and created columns, join keys and TTLs); a test holds it equal
to Feast's result. On-demand views (time encodings) are not computed here: the panel derives the
calendar of every hour itself.

:func:`panel_from_feature_store` asks for every user at the end of every hour of the window: the
hour starting at ``h`` holds the aggregate stamped ``h + 1 h``. Within a view's TTL a missing
hour therefore carries the last known aggregate forward, as serving sees it online; hours older
than the TTL, and those before a user's first aggregate, stay NaN.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
from feast import FeatureStore, FileSource
from feast.errors import FeatureServiceNotFoundException

from core.regions import RegionCatalogue, load_regions
from core.schema import RESOURCE_COLUMNS
from features.aggregate import HOUR, TIMESTAMP, USER_KEY
from training.panel import STATIC_COLUMNS, UNKNOWN, Panel

VALUE_FEATURES: tuple[str, ...] = tuple(f"{resource}_mean" for resource in RESOURCE_COLUMNS)
REGION_FEATURE = "last_region"
_ROW = "__row__"
_FEATURE_TIME = "__feature_timestamp__"
_UTC_NS = "datetime64[ns, UTC]"


@dataclass(frozen=True)
class ViewTable:
    """Where one feature view of a service reads its rows, and how it joins them."""

    view: str
    path: Path
    join_key: str
    timestamp_field: str
    created_field: str | None
    ttl: timedelta | None  # None: no lower bound (Feast's TTL of 0)
    features: tuple[str, ...]


def view_tables(
    store: FeatureStore, service: str = "training", features: Collection[str] | None = None
) -> list[ViewTable]:
    """The batch tables behind the (non on-demand) views of ``service``, from the registry.

    ``features`` keeps only those feature names (and views holding at least one of them).
    Raises ValueError for an unknown service, or a view that is not a single-key view over a
    ``FileSource``.
    """
    try:
        feature_service = store.get_feature_service(service, allow_cache=True)
    except FeatureServiceNotFoundException as error:
        raise ValueError(
            f"the Feast registry at {store.repo_path} has no feature service {service!r} "
            "(are the definitions applied? the telemetry_ingest DAG applies them)"
        ) from error
    on_demand = {view.name for view in store.list_on_demand_feature_views(allow_cache=True)}
    tables = []
    for projection in feature_service.feature_view_projections:
        if projection.name in on_demand:
            continue
        names = tuple(
            f.name for f in projection.features if features is None or f.name in features
        )
        if names:
            tables.append(_view_table(store, projection.name, names))
    return tables


def _view_table(store: FeatureStore, name: str, features: tuple[str, ...]) -> ViewTable:
    view = store.get_feature_view(name, allow_registry_cache=True)
    source = view.batch_source
    if not isinstance(source, FileSource):
        raise ValueError(f"view {name!r} reads {type(source).__name__}, not a FileSource")
    if len(view.entity_columns) != 1:
        raise ValueError(f"view {name!r} has {len(view.entity_columns)} join keys; expected 1")
    path = Path(source.path)
    ttl = view.ttl if view.ttl and view.ttl.total_seconds() > 0 else None
    return ViewTable(
        view=name,
        path=path if path.is_absolute() else Path(store.repo_path) / path,
        join_key=view.entity_columns[0].name,
        timestamp_field=source.timestamp_field,
        created_field=source.created_timestamp_column or None,
        ttl=ttl,
        features=features,
    )


def point_in_time_join(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    service: str = "training",
    features: Collection[str] | None = None,
) -> pd.DataFrame:
    """Features of ``service`` for each entity row, joined point in time (module docstring).

    ``entity_df`` has the join key (``user_id``) and ``event_timestamp``; every row comes back
    once, in the same order (with a fresh index), with its other columns passed through and
    NaN/None where a view has no row in range. ``features`` restricts the feature names joined.
    """
    missing = {USER_KEY, TIMESTAMP} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df lacks columns {sorted(missing)}")
    out = entity_df.reset_index(drop=True).copy()
    out[TIMESTAMP] = pd.to_datetime(out[TIMESTAMP], utc=True).astype(_UTC_NS)
    if out.empty:
        return out
    for table in view_tables(store, service, features):
        joined = _join_view(out, table)
        for name in table.features:
            out[name] = joined[name]
    return out


def _join_view(entities: pd.DataFrame, table: ViewTable) -> pd.DataFrame:
    """The latest row of ``table`` for each entity row, aligned with ``entities``' index."""
    if table.join_key not in entities.columns:
        raise ValueError(f"entity_df lacks the join key {table.join_key!r} of {table.view!r}")
    first, last = entities[TIMESTAMP].min(), entities[TIMESTAMP].max()
    rows = _read_rows(table, first - table.ttl if table.ttl else None, last)
    left = pd.DataFrame(
        {
            _ROW: np.arange(len(entities)),
            table.join_key: entities[table.join_key].astype(str).to_numpy(object),
            TIMESTAMP: entities[TIMESTAMP].array,
        }
    ).sort_values(TIMESTAMP, kind="stable")
    merged = pd.merge_asof(
        left,
        rows,
        left_on=TIMESTAMP,
        right_on=_FEATURE_TIME,
        by=table.join_key,
        direction="backward",
        allow_exact_matches=True,
        tolerance=pd.Timedelta(table.ttl) if table.ttl else None,
    )
    return merged.sort_values(_ROW).set_index(entities.index)


def _read_rows(table: ViewTable, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
    """Rows of a view's table stamped in ``[start, end]``, one per (key, stamp), sorted by stamp.

    Of rows sharing a key and stamp, the latest ``created`` wins (as in Feast).
    """
    stamp = ds.field(table.timestamp_field)
    condition = stamp <= end
    if start is not None:
        condition = condition & (stamp >= start)
    columns = [table.join_key, table.timestamp_field, *table.features]
    if table.created_field:
        columns.append(table.created_field)
    frame = _dataset(table).to_table(columns=columns, filter=condition)
    rows = frame.to_pandas()
    rows[table.join_key] = rows[table.join_key].astype(str).astype(object)
    rows[_FEATURE_TIME] = pd.to_datetime(rows.pop(table.timestamp_field), utc=True).astype(_UTC_NS)
    order = [_FEATURE_TIME, table.created_field] if table.created_field else [_FEATURE_TIME]
    rows = rows.sort_values(order, kind="stable")
    rows = rows.drop_duplicates([table.join_key, _FEATURE_TIME], keep="last")
    return rows.loc[:, [table.join_key, _FEATURE_TIME, *table.features]]


# ------------------------------------------------------------------------------ the panel


def panel_from_feature_store(
    store: FeatureStore,
    window_days: int,
    end: datetime | None = None,
    service: str = "training",
    catalogue: RegionCatalogue | None = None,
) -> Panel:
    """The hourly panel of the ``window_days`` before ``end`` (default: the latest aggregate).

    Series are the users with an hourly aggregate in the window; values are the hourly means
    of the four resources, regions the region nearest each hour's last position, static
    covariates each user's profile as known at ``end``. Raises ValueError when the store holds
    no hourly aggregates up to ``end``.
    """
    catalogue = catalogue if catalogue is not None else load_regions()
    end = None if end is None else pd.Timestamp(end)
    if end is not None:
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    tables = view_tables(store, service, VALUE_FEATURES)
    if len(tables) != 1 or set(tables[0].features) != set(VALUE_FEATURES):
        raise ValueError(f"service {service!r} must hold {VALUE_FEATURES} in one feature view")
    resources = tables[0]
    latest = _latest_stamp(resources, end)
    if latest is None:
        raise ValueError(
            f"the offline store holds no hourly aggregates (view {resources.view!r})"
            + (f" up to {end}" if end is not None else "")
        )
    last_end = latest.floor("h")
    hour_ends = pd.date_range(last_end - (window_days * 24 - 1) * HOUR, last_end, freq="h")
    users = _users_between(resources, hour_ends[0] - HOUR, last_end)
    grid = pd.DataFrame(
        {
            USER_KEY: np.repeat(np.asarray(users, dtype=object), len(hour_ends)),
            TIMESTAMP: hour_ends[np.tile(np.arange(len(hour_ends)), len(users))],
        }
    )
    hourly = point_in_time_join(store, grid, service, (*VALUE_FEATURES, REGION_FEATURE))
    shape = (len(users), len(hour_ends))
    values = hourly[list(VALUE_FEATURES)].to_numpy(np.float32).reshape(*shape, -1)
    region = None
    if REGION_FEATURE in hourly.columns and hourly[REGION_FEATURE].notna().any():
        codes = hourly[REGION_FEATURE]
        known = codes.notna().to_numpy()
        index = np.full(len(codes), -1, np.int16)
        index[known] = catalogue.indices(codes[known].astype(str).to_numpy())
        region = index.reshape(shape)
    at_end = pd.DataFrame({USER_KEY: users, TIMESTAMP: last_end})
    profile = point_in_time_join(store, at_end, service, STATIC_COLUMNS).set_index(USER_KEY)
    static = pd.DataFrame(
        {c: profile[c] if c in profile.columns else UNKNOWN for c in STATIC_COLUMNS}
    ).astype(object)
    static = static.where(static.notna(), UNKNOWN).astype(str)
    static.index = pd.Index(users, name="series_id")
    return Panel(tuple(users), hour_ends - HOUR, values, region, static)


def _dataset(table: ViewTable) -> ds.Dataset:
    """The Parquet dataset of a view's batch source; ValueError when it does not exist."""
    if not table.path.exists():
        raise ValueError(f"the offline table {table.path} of view {table.view!r} does not exist")
    return ds.dataset(table.path, format="parquet")


def _latest_stamp(table: ViewTable, end: pd.Timestamp | None) -> pd.Timestamp | None:
    """The latest ``event_timestamp`` of a view's table (at or before ``end``), or None."""
    stamps = _dataset(table).to_table(
        columns=[table.timestamp_field],
        filter=None if end is None else ds.field(table.timestamp_field) <= end,
    )[table.timestamp_field]
    latest = pc.max(stamps).as_py() if len(stamps) else None
    return None if latest is None else pd.Timestamp(latest).tz_convert("UTC")


def _users_between(table: ViewTable, after: pd.Timestamp, until: pd.Timestamp) -> list[str]:
    """Sorted ids of the users with a row stamped in ``(after, until]``."""
    stamp = ds.field(table.timestamp_field)
    keys = _dataset(table).to_table(
        columns=[table.join_key], filter=(stamp > after) & (stamp <= until)
    )[table.join_key]
    return sorted(str(user) for user in pc.unique(keys).to_pylist())
