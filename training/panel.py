"""Hourly panels: every user's resource demand (and region) on one regular hourly grid.

A :class:`Panel` is what forecasters train on and what the backtest scores: ``n`` series (one
per user) by ``T`` hours by the four resources of ``core.schema.RESOURCE_COLUMNS``. It is built
from telemetry by :func:`panel_from_telemetry`, which reuses the feature layer's hourly
aggregation (``features.aggregate.hourly_user_features``) so that training sees exactly the
hourly means that Feast serves.

Conventions:

- ``times`` are hour *starts*. The feature tables stamp an hour with its end (the moment it is
  known); here hour ``times[i]`` holds the telemetry stamped in ``[times[i], times[i] + 1h)``.
- An hour without any telemetry row is NaN, never zero: no data is not zero demand.
- ``region`` is the catalogue index of the region nearest to the user's last position in the
  hour, -1 where unknown; it is ``None`` for sources without any position (e.g. GWA-T-12).
- ``static`` holds each user's role and home region as known at the end of the data. For a
  backtest this is a (mild) look-ahead; the baselines do not use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds

from core.regions import RegionCatalogue, load_regions
from core.schema import COLUMN_NAMES, RESOURCE_COLUMNS
from core.settings import get_settings
from features.aggregate import HOUR, TIMESTAMP, USER_KEY, hourly_user_features, user_profiles

STATIC_COLUMNS: tuple[str, ...] = ("role", "home_region")
UNKNOWN = "unknown"


@dataclass(frozen=True, eq=False)
class Panel:
    """Hourly resource demand of ``n`` series over ``T`` hours (see the module docstring)."""

    series_ids: tuple[str, ...]
    times: pd.DatetimeIndex
    values: np.ndarray
    region: np.ndarray | None
    static: pd.DataFrame

    def __post_init__(self) -> None:
        n, t = len(self.series_ids), len(self.times)
        if self.values.shape != (n, t, len(RESOURCE_COLUMNS)):
            raise ValueError(
                f"values has shape {self.values.shape}, expected {(n, t, len(RESOURCE_COLUMNS))}"
            )
        if self.region is not None and self.region.shape != (n, t):
            raise ValueError(f"region has shape {self.region.shape}, expected {(n, t)}")
        if list(self.static.index) != list(self.series_ids):
            raise ValueError("static must be indexed by series_ids, in the same order")

    @property
    def n_series(self) -> int:
        """Number of series (users)."""
        return len(self.series_ids)

    @property
    def n_hours(self) -> int:
        """Number of hours on the grid (T)."""
        return len(self.times)

    def head(self, stop: int) -> Panel:
        """The first ``stop`` hours: the history available at an origin ``stop`` (exclusive)."""
        return self.window(0, stop)

    def window(self, start: int, stop: int) -> Panel:
        """Hours ``start`` (inclusive) to ``stop`` (exclusive) of every series."""
        if not 0 <= start <= stop <= self.n_hours:
            raise ValueError(f"window [{start}, {stop}) is outside [0, {self.n_hours}]")
        return Panel(
            series_ids=self.series_ids,
            times=self.times[start:stop],
            values=self.values[:, start:stop],
            region=None if self.region is None else self.region[:, start:stop],
            static=self.static,
        )


def panel_from_telemetry(
    source: pd.DataFrame | Path, catalogue: RegionCatalogue | None = None
) -> Panel:
    """Build the hourly panel of a telemetry frame or dataset folder (or Parquet file).

    A dataset on disk is read with pyarrow, only the telemetry schema's columns, and aggregated
    ``backtest.users_per_batch`` users at a time, so that memory stays bounded on large
    simulations (the GWA-T-12 import, 100 users, is a single batch). Raises ValueError when the
    source holds no telemetry.
    """
    catalogue = catalogue if catalogue is not None else load_regions()
    hourly, profiles = [], []
    for frame in _user_batches(source):
        hourly.append(hourly_user_features(frame, catalogue))
        profiles.append(user_profiles(frame, catalogue))
    hours = pd.concat(hourly, ignore_index=True) if hourly else pd.DataFrame()
    if hours.empty:
        raise ValueError("the telemetry source holds no rows; cannot build a panel")
    return _assemble(hours, pd.concat(profiles, ignore_index=True), catalogue)


def _user_batches(source: pd.DataFrame | Path) -> Iterator[pd.DataFrame]:
    """Yield telemetry frames holding all rows of disjoint sets of users."""
    if isinstance(source, pd.DataFrame):
        yield source
        return
    dataset = ds.dataset(Path(source), format="parquet")
    users = pc.unique(dataset.to_table(columns=[USER_KEY])[USER_KEY]).to_pylist()
    size = get_settings().backtest.users_per_batch
    for first in range(0, len(users), size):
        chosen = users[first : first + size]
        table = dataset.to_table(
            columns=list(COLUMN_NAMES), filter=pc.field(USER_KEY).isin(chosen)
        )
        yield table.to_pandas()


def _assemble(hours: pd.DataFrame, profiles: pd.DataFrame, catalogue: RegionCatalogue) -> Panel:
    """Place hourly aggregates (stamped at hour end) on a regular grid of hour starts."""
    starts = hours[TIMESTAMP] - HOUR
    times = pd.date_range(starts.min(), starts.max(), freq="h", tz="UTC")
    series_ids = tuple(sorted(hours[USER_KEY].astype(str).unique()))
    row = pd.Index(series_ids).get_indexer(hours[USER_KEY].astype(str))
    col = ((starts - times[0]) // HOUR).to_numpy(dtype=np.int64)

    values = np.full((len(series_ids), len(times), len(RESOURCE_COLUMNS)), np.nan, np.float32)
    means = hours[[f"{r}_mean" for r in RESOURCE_COLUMNS]].to_numpy(dtype=np.float32)
    values[row, col] = means

    region = None
    known = hours["last_region"].notna().to_numpy()
    if known.any():
        region = np.full((len(series_ids), len(times)), -1, np.int16)
        codes = hours.loc[known, "last_region"].astype(str).to_numpy()
        region[row[known], col[known]] = catalogue.indices(codes)

    return Panel(series_ids, times, values, region, _static(profiles, series_ids))


def _static(profiles: pd.DataFrame, series_ids: tuple[str, ...]) -> pd.DataFrame:
    """Each user's latest role and home region; 'unknown' where the telemetry cannot say."""
    latest = (
        profiles.sort_values([USER_KEY, TIMESTAMP])
        .drop_duplicates(USER_KEY, keep="last")
        .assign(**{USER_KEY: lambda f: f[USER_KEY].astype(str)})
        .set_index(USER_KEY)
    )
    static = latest.reindex(list(series_ids))[list(STATIC_COLUMNS)].astype(object)
    static = static.where(static.notna(), UNKNOWN).astype(str)
    static.index.name = "series_id"
    return static
