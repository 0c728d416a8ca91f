"""Local time in every city of the world at every simulated instant (time zones, DST included)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MINUTES_PER_DAY = 1440
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


class LocalClock:
    """UTC offsets of a set of cities' time zones over a grid of UTC instants."""

    def __init__(
        self, times: pd.DatetimeIndex, interval_minutes: int, city_timezones: Sequence[str]
    ) -> None:
        self.times = times
        self.interval_minutes = interval_minutes
        self.utc_minutes = times.as_unit("ns").asi8 // 60_000_000_000
        zones, self.city_zone = np.unique(
            np.asarray(city_timezones, dtype=str), return_inverse=True
        )
        naive_utc = times.tz_localize(None).as_unit("ns").asi8
        self.zone_offsets = np.stack(
            [
                (times.tz_convert(zone).tz_localize(None).as_unit("ns").asi8 - naive_utc)
                // 60_000_000_000
                for zone in zones
            ]
        ).astype(np.int32)

    def offset_minutes(self, city: np.ndarray, step: np.ndarray) -> np.ndarray:
        """UTC offset (minutes) of ``city``'s zone at ``step`` (steps clipped to the grid)."""
        step = np.clip(step, 0, len(self.times) - 1)
        return self.zone_offsets[self.city_zone[city], step]

    def local_minutes(self, city: np.ndarray) -> np.ndarray:
        """Local wall-clock minutes since the epoch for a (users, steps) array of city indices."""
        steps = np.arange(city.shape[-1])
        return self.utc_minutes[steps] + self.zone_offsets[self.city_zone[city], steps]

    def step_of_local(self, local_minutes: float, city: int) -> int:
        """First grid step at or after a local wall-clock time in ``city`` (may be off the grid)."""
        interval = self.interval_minutes
        guess = int((local_minutes - self.utc_minutes[0]) // interval)
        utc = local_minutes - self.offset_minutes(np.array(city), np.array(guess))
        return int(np.ceil((utc - self.utc_minutes[0]) / interval))

    def local_minutes_at(self, step: int, city: int) -> int:
        """Local wall-clock minutes since the epoch in ``city`` at grid ``step`` (may be off it)."""
        utc = self.utc_minutes[0] + step * self.interval_minutes
        return int(utc + self.offset_minutes(np.array(city), np.array(step)))


def weekday(local_day: np.ndarray) -> np.ndarray:
    """Day of the week (Monday = 0) of local days counted since the epoch."""
    return (local_day + EPOCH_WEEKDAY) % 7
