"""Training windows cut from hourly series, and the LightningDataModule that serves them.

A window is one series at one forecast origin ``t``: the encoder reads the ``L`` hours before
``t`` and the targets are the ``H`` hours from ``t``. Every series is padded at the front with
``L`` missing hours, so a user with less history than ``L`` still yields windows (cold start);
missing hours stay NaN and the model masks them.

Values are scaled per series and resource by a ``Scaler`` fitted on the training history only.

Where the series carry regions, every window also gets the user's trip history as known at its
origin (``trip_history``): read from the whole history before the origin, not only the encoder
window, because a habitual trip every two to four weeks is rarely inside one week of encoder.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

# MASE compares against the same hour of the previous day (DESIGN §4).
SEASON_HOURS = 24
# Below this a scale is treated as zero (a constant or empty series).
_TINY = 1e-6
# Columns of ``trip_history``.
TRIP_FEATURES = ("hours_there", "typical_stay_hours", "stays_seen", "usual_destination")


def _nan_reduce(fn, values: np.ndarray, axis: int) -> np.ndarray:
    """``np.nan*`` reduction that returns NaN for all-missing slices without warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(values, axis=axis)


@dataclass(frozen=True)
class Scaler:
    """Per-series, per-resource affine scaling: ``scaled = (value - loc) / scale``.

    ``loc`` is the series' median and ``scale`` the in-sample MAE of the lag-24 seasonal naive
    forecast, so one unit of scaled error is one unit of MASE: the pinball loss in scaled space
    weighs every series as the MASE metric does.
    """

    loc: np.ndarray  # (n, resources) float32
    scale: np.ndarray  # (n, resources) float32, > 0

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Scale ``values`` of shape (n, T, resources)."""
        return ((values - self.loc[:, None, :]) / self.scale[:, None, :]).astype(np.float32)

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        """Undo the scaling of ``scaled`` of shape (n, T, resources[, ...])."""
        extra = (None,) * (scaled.ndim - 3)
        index = (slice(None), None, slice(None), *extra)
        return scaled * self.scale[index] + self.loc[index]

    def take(self, rows: np.ndarray) -> Scaler:
        """The scalers of the series at positions ``rows``."""
        return Scaler(self.loc[rows], self.scale[rows])


def fit_scaler(values: np.ndarray) -> Scaler:
    """Fit a ``Scaler`` on ``values`` (n, T, resources), NaN where there is no data.

    Where the seasonal naive error is zero or unknown (constant or very short series), the
    mean absolute deviation stands in, and 1 where that is zero too.
    """
    loc = np.nan_to_num(_nan_reduce(np.nanmedian, values, axis=1), nan=0.0)
    naive = _nan_reduce(
        np.nanmean, np.abs(values[:, SEASON_HOURS:] - values[:, :-SEASON_HOURS]), axis=1
    )
    spread = _nan_reduce(np.nanmean, np.abs(values - loc[:, None, :]), axis=1)
    scale = np.where(naive > _TINY, naive, np.where(spread > _TINY, spread, 1.0))
    return Scaler(loc.astype(np.float32), scale.astype(np.float32))


def calendar(times: pd.DatetimeIndex) -> np.ndarray:
    """Known-future covariates of each hour: (len(times), 2) int64 hour of day, day of week."""
    return np.stack([times.hour, times.dayofweek], axis=1).astype(np.int64)


@dataclass(frozen=True)
class SeriesTensors:
    """Scaled series ready to cut windows from, padded at the front with ``encoder_length`` hours.

    Positions passed to ``windows`` are forecast origins in unpadded hours: origin ``t`` means
    the encoder reads hours ``t - L … t - 1`` and the targets are hours ``t … t + H - 1``.
    """

    values: torch.Tensor  # (n, L + T, resources) float32, NaN where missing
    calendar: torch.Tensor  # (L + T + H, 2) int64: hour of day, day of week
    static: torch.Tensor  # (n, 2) int64: role index, home region index
    region: torch.Tensor | None  # (n, L + T) int64 region index, -1 unknown
    trips: torch.Tensor | None  # (n, T + 1, 4) float32 ``trip_history`` at each origin 0 … T
    encoder_length: int
    horizon: int

    @property
    def length(self) -> int:
        """Hours of real (unpadded) history, T."""
        return self.values.shape[1] - self.encoder_length

    def windows(
        self, series: torch.Tensor, origins: torch.Tensor, targets: bool = True
    ) -> dict[str, torch.Tensor]:
        """The windows of ``series[i]`` at ``origins[i]`` as one batch (a dict of tensors)."""
        steps_back = torch.arange(self.encoder_length)
        steps_ahead = torch.arange(self.horizon)
        past = origins[:, None] + steps_back  # padded positions of the encoder hours
        future = origins[:, None] + self.encoder_length + steps_ahead
        rows = series[:, None]
        batch = {
            "past": self.values[rows, past],
            "past_calendar": self.calendar[past],
            "future_calendar": self.calendar[future],
            "static": self.static[series],
        }
        if self.region is not None:
            batch["past_region"] = self.region[rows, past]
            batch["trip_history"] = self.trips[series, origins]
        if targets:
            batch["target"] = self.values[rows, future]
            if self.region is not None:
                batch["target_region"] = self.region[rows, future]
        return batch


def series_tensors(
    scaled: np.ndarray,
    times: pd.DatetimeIndex,
    static: np.ndarray,
    region: np.ndarray | None,
    encoder_length: int,
    horizon: int,
) -> SeriesTensors:
    """Pad scaled series (n, T, resources) and their covariates into ``SeriesTensors``.

    ``static`` is (n, 2) role and home-region indices; ``region`` (n, T) region indices, -1
    unknown, or None when the source has no location.
    """
    n, length, resources = scaled.shape
    values = np.empty((n, encoder_length + length, resources), dtype=np.float32)
    values[:, :encoder_length] = np.nan
    values[:, encoder_length:] = scaled  # one copy, straight into the padded buffer
    hours = pd.date_range(
        times[0] - pd.Timedelta(hours=encoder_length),
        periods=encoder_length + len(times) + horizon,
        freq="h",
    )
    padded_region, trips = None, None
    if region is not None:
        unknown = np.full((n, encoder_length), -1, dtype=np.int64)
        padded_region = torch.from_numpy(np.concatenate([unknown, region.astype(np.int64)], 1))
        trips = torch.from_numpy(trip_history(region, np.asarray(static)[:, 1]))
    return SeriesTensors(
        values=torch.from_numpy(values),
        calendar=torch.from_numpy(calendar(hours)),
        static=torch.from_numpy(np.asarray(static, dtype=np.int64)),
        region=padded_region,
        trips=trips,
        encoder_length=encoder_length,
        horizon=horizon,
    )


def trip_history(region: np.ndarray, home: np.ndarray) -> np.ndarray:
    """Each user's stays as known at every origin: (n, T + 1, 4) float32, row ``o`` from hours
    before ``o`` only.

    ``region`` is (n, T) region indices, -1 unknown; ``home`` (n,) home-region indices (any
    value that is not a region index when unknown). A stay is a run of known hours in one
    region; unknown hours neither end nor start one. The columns (``TRIP_FEATURES``):

    - ``hours_there``: hours since the last hour known elsewhere (since the first known hour
      when there is none; 0 before any), over the whole history;
    - ``typical_stay_hours``: the median length of the user's completed earlier stays in the
      region they are in now; NaN when there is none (a one-off trip to a new place says
      nothing about how long this one lasts). A stay is measured as ``hours_there`` is, from
      the hour after the last hour known elsewhere to midway between its last known hour and
      the first hour known elsewhere after it; it is complete once that next region is seen;
    - ``stays_seen``: how many completed stays that median is over;
    - ``usual_destination``: the region of most of their earlier stays away from home (the
      latest on a tie), -1 without one.

    Travellers repeat habitual trips of a set length to a favourite destination, so the
    typical stay says when the current one is likely to end, and the usual destination where
    a user who has just left home (hours of unknown region: in flight) will turn up.
    """
    n, length = region.shape
    out = np.zeros((n, length + 1, len(TRIP_FEATURES)), np.float32)
    out[..., 1] = np.nan
    out[..., 3] = -1
    for i in range(n):
        out[i] = _stays_of(region[i], int(home[i]), out[i])
    return out


def _stays_of(row: np.ndarray, home: int, out: np.ndarray) -> np.ndarray:
    """``trip_history`` of one user's (T,) regions, written into ``out`` (T + 1, 4)."""
    known = np.flatnonzero(row >= 0)
    if len(known) == 0:
        return out
    places = row[known]
    starts = np.concatenate([[0], np.flatnonzero(places[1:] != places[:-1]) + 1])
    ends = np.concatenate([starts[1:] - 1, [len(places) - 1]])
    region, first, last = places[starts], known[starts], known[ends]
    # Stay k is current at origins first[k] + 1 … first[k + 1] (the last one up to T).
    until = np.concatenate([first[1:], [len(row)]])
    # Hours of stay k count from the hour after the last one known elsewhere.
    since = np.concatenate([[first[0] - 1], last[:-1]])
    lengths = (last[1:-1] + first[2:]) / 2.0 - since[1:-1] - 0.5  # stays 1 … K - 2, complete
    for k in range(len(region)):
        origins = np.arange(first[k] + 1, until[k] + 1)
        out[origins, 0] = origins - 1 - since[k]
        done = np.arange(1, k)  # stays complete once stay k has been seen
        same = done[region[done] == region[k]]
        if len(same):
            out[origins, 1] = np.median(lengths[same - 1])
            out[origins, 2] = len(same)
        out[origins, 3] = _usual(region[:k][region[:k] != home])
    return out


def _usual(regions: np.ndarray) -> int:
    """The most frequent of ``regions`` (in order), the latest among the tied; -1 when empty."""
    if len(regions) == 0:
        return -1
    values, counts = np.unique(regions, return_counts=True)
    tied = values[counts == counts.max()]
    return int(regions[np.isin(regions, tied)][-1])


def split_origins(
    observed: np.ndarray, encoder_length: int, horizon: int, validation_hours: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation windows as (m, 2) arrays of [series, origin], split by time.

    ``observed`` (n, T) says which hours hold data. Validation windows have their targets in
    the last ``validation_hours`` hours; training windows end before those begin. A window is
    kept when its encoder and its targets each hold at least one observed hour; the encoder
    may be mostly padding, which teaches the model the cold start.
    """
    n, length = observed.shape
    seen = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(observed, axis=1)], axis=1)
    origins = np.arange(1, length - horizon + 1)
    lo = np.maximum(origins - encoder_length, 0)
    has_past = seen[:, origins] - seen[:, lo] > 0
    has_future = seen[:, origins + horizon] - seen[:, origins] > 0
    usable = has_past & has_future
    validation_start = length - validation_hours
    in_train = origins + horizon <= validation_start
    in_validation = origins >= validation_start
    train = np.argwhere(usable & in_train[None, :])
    validation = np.argwhere(usable & in_validation[None, :])
    if len(train) == 0 or len(validation) == 0:
        raise ValueError(
            f"history of {length} hours is too short for horizon {horizon} with "
            f"{validation_hours} validation hours"
        )
    train[:, 1] = origins[train[:, 1]]
    validation[:, 1] = origins[validation[:, 1]]
    return train, validation


def subsample(origins: np.ndarray, at_most: int, seed: int) -> np.ndarray:
    """At most ``at_most`` of the (m, 2) ``origins``, a seeded random choice kept in order."""
    if len(origins) <= at_most:
        return origins
    chosen = np.random.default_rng(seed).choice(len(origins), size=at_most, replace=False)
    return origins[np.sort(chosen)]


class WindowDataset(Dataset):
    """Windows at fixed (series, origin) pairs; indexing with a list of positions gives a batch."""

    def __init__(self, tensors: SeriesTensors, origins: np.ndarray, targets: bool = True) -> None:
        self.tensors = tensors
        self.origins = torch.from_numpy(np.asarray(origins, dtype=np.int64).reshape(-1, 2))
        self.targets = targets

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, positions: int | Sequence[int]) -> dict[str, torch.Tensor]:
        picked = self.origins[torch.as_tensor(positions).reshape(-1)]
        return self.tensors.windows(picked[:, 0], picked[:, 1], targets=self.targets)


def batch_loader(dataset: WindowDataset, sampler, batch_size: int, workers: int) -> DataLoader:
    """A DataLoader that cuts each batch in one vectorised call instead of item by item."""
    return DataLoader(
        dataset,
        sampler=BatchSampler(sampler, batch_size=batch_size, drop_last=False),
        batch_size=None,
        num_workers=workers,
    )


class WindowDataModule(pl.LightningDataModule):
    """Random training windows (a fixed number per epoch, seeded) and all validation windows."""

    def __init__(
        self,
        tensors: SeriesTensors,
        train_origins: np.ndarray,
        validation_origins: np.ndarray,
        batch_size: int,
        samples_per_epoch: int,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train_set = WindowDataset(tensors, train_origins)
        self.validation_set = WindowDataset(tensors, validation_origins)
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        """``samples_per_epoch`` windows drawn with replacement from a seeded generator."""
        sampler = RandomSampler(
            self.train_set,
            replacement=True,
            num_samples=self.samples_per_epoch,
            generator=torch.Generator().manual_seed(self.seed),
        )
        return batch_loader(self.train_set, sampler, self.batch_size, self.num_workers)

    def val_dataloader(self) -> DataLoader:
        """Every validation window, in order."""
        sampler = SequentialSampler(self.validation_set)
        return batch_loader(self.validation_set, sampler, self.batch_size, self.num_workers)
