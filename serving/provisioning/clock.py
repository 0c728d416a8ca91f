"""Where the local provider reads the time: the wall clock, or a clock the caller moves.

The manager takes ``now`` as an argument everywhere; a provider that simulates delays needs a
clock of its own. Production uses :func:`system_clock`; the closed-loop evaluation and the
tests use a :class:`ManualClock` and pass the same time to the manager.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that stands still until it is set or advanced (simulated time)."""

    def __init__(self, start: datetime) -> None:
        self.set(start)

    def __call__(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        """Jump to ``now`` (timezone-aware)."""
        if now.tzinfo is None:
            raise ValueError(f"the clock needs a timezone-aware time, got {now!r}")
        self._now = now
