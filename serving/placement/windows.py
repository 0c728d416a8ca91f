"""From forecast steps to placement windows: allocation, traffic, shortfall and presence.

One placement decision covers ``window_hours`` consecutive forecast steps (step 1 to
``window_hours`` is window 0, and so on). Within a window a user's allocation is fixed, so it is
sized for the window's busiest step: the configured quantile plus headroom. Everything else is
an expectation over the window's hours:

- traffic: the median network rate over the hours, in GB (what egress is billed on);
- shortfall hours: the expected hours in which demand exceeds the allocation;
- presence: the expected hours the user spends at each location (catalogue region), with the
  probability mass ``region_probs`` leaves unassigned placed at the user's current region.

The steps are laid out on a dense (user, step) grid, so that windows are a reshape away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.settings import PlacementSettings
from serving.placement.inputs import HOUR_NS, PlacementInputs

GB_PER_MBPS_HOUR = 3600 / 8 / 1000  # one Mbps for an hour moves 0.45 GB
RATE_P50_TO_P90 = np.log(5.0)  # the tail falls from 0.5 at p50 to 0.1 at p90


@dataclass(frozen=True, eq=False)
class WindowDemand:
    """What the users forecast in one window need, on window-local user positions."""

    index: int
    users: np.ndarray  # (n,) positions in PlacementInputs.user_ids
    start_ns: np.ndarray  # (n,) window start (UTC, ns)
    end_ns: np.ndarray  # (n,) window end, exclusive
    hours: np.ndarray  # (n,) forecast hours of the user in the window
    need: np.ndarray  # (n, 4) allocation: quantile + headroom at the busiest step
    traffic_gb: np.ndarray  # (n,) expected egress over the window
    shortfall_hours: np.ndarray  # (n,) expected hours with demand above the allocation
    presence: np.ndarray  # (n, S) expected hours at each location

    @property
    def n_users(self) -> int:
        """Users with at least one forecast step in the window."""
        return len(self.users)


@dataclass(frozen=True, eq=False)
class Demand:
    """The same quantities for every user and window: arrays shaped (users, windows, ...)."""

    start_ns: np.ndarray
    end_ns: np.ndarray
    hours: np.ndarray
    need: np.ndarray
    traffic_gb: np.ndarray
    shortfall_hours: np.ndarray
    presence: np.ndarray

    @property
    def n_windows(self) -> int:
        """Windows of the horizon that have any forecast step."""
        return self.hours.shape[1]

    def window(self, index: int) -> WindowDemand:
        """Window ``index``, restricted to the users with a forecast step in it."""
        users = np.flatnonzero(self.hours[:, index] > 0)
        if len(users) == len(self.hours):
            users = slice(None)  # everyone: views instead of copies
        return WindowDemand(
            index=index,
            users=np.arange(len(self.hours))[users],
            start_ns=self.start_ns[users, index],
            end_ns=self.end_ns[users, index],
            hours=self.hours[users, index],
            need=self.need[users, index],
            traffic_gb=self.traffic_gb[users, index],
            shortfall_hours=self.shortfall_hours[users, index],
            presence=self.presence[users, index],
        )


def window_demand(inputs: PlacementInputs, settings: PlacementSettings, n_regions: int) -> Demand:
    """Aggregate the forecast steps of ``inputs`` into windows of ``settings.window_hours``."""
    n, width = inputs.n_users, settings.window_hours
    n_windows = -(-int(inputs.row_step.max(initial=0)) // width)
    grid = _Grid(inputs, n_windows * width)

    by_window = (n, n_windows, width, inputs.p50.shape[1])
    p50, p90 = grid.place(inputs.p50).reshape(by_window), grid.place(inputs.p90).reshape(by_window)
    quantile = p90 if settings.allocation_quantile == "p90" else p50
    need = quantile.max(axis=2) * (1.0 + settings.headroom)
    shortfall = shortfall_probability(need[:, :, None, :], p50, p90).reshape(-1) * grid.present
    hour = grid.place(inputs.row_hour_ns[:, None]).reshape(n, n_windows, width)
    offset = np.arange(width) * HOUR_NS
    present = grid.present.reshape(n, n_windows, width)
    start = np.where(present, hour - offset, np.iinfo(np.int64).max).min(axis=2)
    end = np.where(present, hour + HOUR_NS, np.iinfo(np.int64).min).max(axis=2)

    presence = _presence(inputs, grid, n_windows, width, n_regions)
    return Demand(
        start_ns=start,
        end_ns=end,
        hours=present.sum(axis=2).astype(np.float64),
        need=need,
        traffic_gb=p50[..., 3].sum(axis=2) * GB_PER_MBPS_HOUR,
        shortfall_hours=shortfall.reshape(n, n_windows, width).sum(axis=2),
        presence=presence,
    )


class _Grid:
    """The (user, step) cells of a horizon of ``n_steps`` steps, and which have a forecast."""

    def __init__(self, inputs: PlacementInputs, n_steps: int) -> None:
        self.n_steps = n_steps
        self.size = inputs.n_users * n_steps
        self.cell = inputs.row_user * n_steps + inputs.row_step - 1
        self.present = np.zeros(self.size, dtype=bool)
        self.present[self.cell] = True

    def place(self, rows: np.ndarray) -> np.ndarray:
        """Row values (rows, k) on the grid (cells, k); cells without a forecast hold 0."""
        out = np.zeros((self.size, rows.shape[1]), dtype=rows.dtype)
        out[self.cell] = rows
        return out


def _presence(
    inputs: PlacementInputs, grid: _Grid, n_windows: int, width: int, n_regions: int
) -> np.ndarray:
    """Expected hours per (user, window, location); unassigned mass at the current region."""
    prob_cell = inputs.prob_user * grid.n_steps + inputs.prob_step - 1
    assigned = np.bincount(prob_cell, weights=inputs.prob_value, minlength=grid.size)
    residual = np.clip(1.0 - assigned, 0.0, 1.0) * grid.present
    target = (inputs.prob_user * n_windows + (inputs.prob_step - 1) // width) * n_regions
    target += inputs.prob_region
    shape = (inputs.n_users, n_windows, n_regions)
    presence = np.bincount(target, weights=inputs.prob_value, minlength=int(np.prod(shape)))
    presence = presence.astype(np.float64, copy=False).reshape(shape)
    users = np.arange(inputs.n_users)[:, None]
    home = inputs.current_region[:, None]
    presence[users, np.arange(n_windows)[None, :], home] += residual.reshape(
        inputs.n_users, n_windows, width
    ).sum(axis=2)
    return presence


def shortfall_probability(allocation: np.ndarray, p50: np.ndarray, p90: np.ndarray) -> np.ndarray:
    """P(demand of any resource exceeds its allocation); resources are the last axis.

    Each resource's demand is given an exponential upper tail through P(> p50) = 0.5 and
    P(> p90) = 0.1, which needs no assumption about the lower tail and copes with p50 = 0 (idle
    hours). Where p90 <= p50 the forecast carries no spread and demand is taken to be p50.
    Resources are treated as independent.
    """
    spread = p90 - p50
    tail = np.subtract(allocation, p50, dtype=np.float64)
    tail *= -RATE_P50_TO_P90
    spread_out = spread > 0
    np.divide(tail, spread, out=tail, where=spread_out)
    np.exp(tail, out=tail)
    tail *= 0.5
    np.minimum(tail, 1.0, out=tail)
    no_spread = ~spread_out
    if no_spread.any():
        tail[no_spread] = np.broadcast_to(allocation < p50, tail.shape)[no_spread]
    np.subtract(1.0, tail, out=tail)
    return 1.0 - np.prod(tail, axis=-1)
