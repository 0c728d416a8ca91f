"""What a policy sees and what it decides, in the closed-loop evaluation.

The engine (``simulation.eval_engine``) calls ``policy.decide(step, observed)`` at every
telemetry interval of the evaluation range. ``observed`` holds only what monitoring has recorded
before ``step`` (positions as GPS or IP fixes, demand, measured latency to the serving region)
plus the serving state; the policy answers with a :class:`Decision`: per user, the region that
should serve them and its allocation, and an optional warm hold elsewhere. The engine applies
the decision with the same boot, copy and scaling delays for every policy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from core.latency import LatencyModel
from core.regions import RegionCatalogue
from core.settings import Settings

RESOURCES: tuple[str, ...] = ("cpu_cores", "ram_gb")
"""Resources an allocation sizes (and prices): vCPU and GB of memory."""

OTHER_RESOURCES: tuple[str, ...] = ("storage_iops", "network_mbps")
"""Telemetry resources that are observed (and forecast) but not allocated nor priced."""

NO_REGION = -1


@dataclass(frozen=True)
class Decision:
    """One policy decision for every user: arrays indexed by user (regions as catalogue indices).

    ``allocation`` and ``warm_allocation`` are shaped (users, len(RESOURCES)); ``warm_region`` is
    ``NO_REGION`` where no warm capacity is held.
    """

    region: np.ndarray
    allocation: np.ndarray
    warm_region: np.ndarray
    warm_allocation: np.ndarray


@dataclass(frozen=True)
class Observed:
    """What monitoring recorded before ``step`` (absolute world steps ``[0, step)``).

    Arrays are (users, step) views; ``demand`` is (users, step, len(RESOURCES)). ``latency_ms`` is
    the measured round trip to the region that served the user (NaN without a session).
    ``region`` and ``allocation`` are the serving state now; ``pending_region`` the region a
    granted move is still under way to (``NO_REGION`` where none): a move the engine refused
    for capacity shows as neither.
    """

    step: int
    lat: np.ndarray
    lon: np.ndarray
    demand: np.ndarray
    other_demand: np.ndarray  # (users, step, len(OTHER_RESOURCES))
    latency_ms: np.ndarray
    session_active: np.ndarray
    region: np.ndarray
    allocation: np.ndarray
    pending_region: np.ndarray
    free_vcpu: np.ndarray  # (regions,) capacity left in each region now, all policies' holds off


@dataclass(frozen=True)
class PolicyContext:
    """What every policy may know before the evaluation starts."""

    settings: Settings
    catalogue: RegionCatalogue
    latency: LatencyModel
    home_region: np.ndarray  # (users,)
    first_step: int  # first step of the evaluation range (the training range is before it)
    steps_per_hour: int
    interval_seconds: float
    utilisation: np.ndarray  # (steps, regions) background load of the regions
    start: pd.Timestamp  # UTC time of world step 0
    user_ids: tuple[str, ...]
    roles: tuple[str, ...]  # each user's role (known from sign-up, like the home region)
    seed: int  # the world's seed: policies draw their own randomness from it


class Policy(Protocol):
    """A serving policy under evaluation."""

    name: str

    def decide(self, step: int, observed: Observed) -> Decision:
        """Where each user should be served from ``step`` on, with what, and what to hold warm."""
        ...


def active_quantile(demand: np.ndarray, active: np.ndarray, q: float) -> np.ndarray:
    """Per-user quantile ``q`` of demand over active intervals: (users, resources); 0 if none."""
    values = np.where(active[..., None], demand, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # users without an active interval
        out = np.nanquantile(values, q, axis=1)
    return np.nan_to_num(out, nan=0.0)
