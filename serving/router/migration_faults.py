"""A fault-injection hook: SIGKILL this process at a named point of a migration.

The crash test (``tests/serving/router/test_migration_faults.py``) runs migrations in a child
process with ``PREWARM_MIGRATION_KILL_AT=<point>`` or ``<point>@<n>`` (die the n-th time the
point is reached; the first by default), then recovers in a fresh process. Without the
variable (production) a point costs one comparison.

Points: ``before:<step>`` (the step's effect has not started) and ``after:<step>`` (the effect
is done, the journal does not say so yet) for every step after ``planned`` except
``redirected``, whose effect *is* its journal record; inside the release, between its effects;
and inside a rollback, between its effects.
"""

from __future__ import annotations

import os
import signal

ENV = "PREWARM_MIGRATION_KILL_AT"

POINTS: tuple[str, ...] = (
    "before:prepared",
    "after:prepared",
    "before:frozen",
    "after:frozen",
    "before:copied",
    "after:copied",
    "before:verified",
    "after:verified",
    "before:started",
    "after:started",
    "before:redirected",
    "before:released",
    "release:unfrozen",
    "release:deleted",
    "after:released",
    "rollback:begun",
    "rollback:copy_deleted",
    "rollback:unfrozen",
    "rollback:released",
)


class FaultPoints:
    """Kills the process when the configured point is reached for the configured time."""

    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.nth = 1
        self.hits = 0
        if spec:
            point, _, nth = spec.partition("@")
            if point not in POINTS:
                raise ValueError(f"{ENV}: unknown point {point!r}; known: {', '.join(POINTS)}")
            self.point, self.nth = point, int(nth or 1)

    @classmethod
    def from_environment(cls) -> FaultPoints:
        """The points ``PREWARM_MIGRATION_KILL_AT`` asks for (none when it is unset)."""
        return cls(os.environ.get(ENV))

    def __call__(self, point: str) -> None:
        """Reached ``point``: SIGKILL this process if it is the configured one, n-th time."""
        if point != self.point:
            return
        self.hits += 1
        if self.hits == self.nth:
            os.kill(os.getpid(), signal.SIGKILL)
