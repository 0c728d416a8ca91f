"""Warm holds and moves in the closed loop, through the real Pre-Allocation Manager.

The engine keeps every policy's warm capacity in a ``serving.provisioning`` ledger, realised by
the ``local`` provider, on the evaluation's simulated clock: the calls the ``predict_and_provision``
DAG and the router's migration executor make, in the same order.

- A new warm hold is a reservation requested from the manager, keyed by user, region and the
  moment it was asked for: admitted against the warm budget, booted by the provider for
  ``cold_boot_seconds``, holding ``warm_fraction`` of its allocation until it is used. Refused
  (over budget, no capacity), the policy holds nothing there.
- A hold the policy no longer asks for is released. One not used within ``ttl_hours`` expires
  (``PreAllocationManager.expire``); a policy still asking for it gets a new one, booted again.
- A move takes the warm hold in its target region, or provisions one cold there (the
  executor's reactive path). Once that is ready the session state is copied, then the manager
  activates the reservation, which scales it to the full allocation (``scale_up_seconds``).
- When a move completes, the reservation the user was served from is released; a move
  cancelled or replaced releases the one it had taken.

At the end every reservation still live is released; the provider must then hold nothing
(``orphaned_resources``). The ledger and the local cloud are SQLite files in ``directory``,
which stay there to be inspected.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from core.regions import RegionCatalogue
from core.settings import Settings
from serving.provisioning.clock import ManualClock
from serving.provisioning.db import make_engine, sqlite_url
from serving.provisioning.ledger import Ledger, Reservation
from serving.provisioning.local import LocalProvider
from serving.provisioning.manager import PreAllocationManager
from serving.provisioning.plan_rows import PreallocationRow
from serving.provisioning.provider import ProviderError, ResourceSpec
from serving.provisioning.states import LIVE

LEDGER_FILE = "ledger.sqlite"
CLOUD_FILE = "local_cloud.sqlite"
COUNTS: tuple[str, ...] = (
    "requested",  # warm holds and cold provisioning the manager brought up
    "activated",  # scaled to the full allocation for a move
    "expired",  # unused for the TTL
    "released_unused",  # warm holds the policy stopped asking for
    "released_cancelled",  # taken by a move that was cancelled or replaced
    "released_source",  # what a user was served from, once they moved
    "released_at_end",  # still held when the evaluation ended
    "refused_over_budget",
    "refused_no_capacity",
    "refused_failed",
    "refused_invalid",
    "refused_activation",  # the region could not scale the hold to the full allocation
)
"""What :meth:`Provisioning.close` reports, each as ``reservations_<name>``."""


class Provisioning:
    """The reservations behind one policy's warm holds and moves (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        catalogue: RegionCatalogue,
        user_ids: tuple[str, ...],
        start: datetime,
        directory: Path,
        copy_seconds: float,
    ) -> None:
        """``start`` is the moment of evaluation time 0; ``copy_seconds`` how long a move
        copies the session state between its target being ready and its activation."""
        config = settings.provisioning
        self.start = start
        self.clock = ManualClock(start)
        self.ttl = timedelta(hours=config.ttl_hours)
        self.copy_s = copy_seconds
        ledger = Ledger.from_url(sqlite_url(directory / LEDGER_FILE), config.lock_timeout_seconds)
        provider = LocalProvider(
            make_engine(sqlite_url(directory / CLOUD_FILE), config.lock_timeout_seconds),
            catalogue,
            config.cold_boot_seconds,
            config.scale_up_seconds,
            self.clock,
        )
        self.manager = PreAllocationManager(ledger, provider, settings, catalogue)
        self.codes = np.asarray(catalogue.codes, dtype=object)
        self.user_ids = user_ids
        none: list[str | None] = [None] * len(user_ids)
        self.warm, self.pending, self.serving = list(none), list(none), list(none)
        self.warm_expires = np.full(len(user_ids), np.inf)
        self.counts: Counter[str] = Counter()

    # ----- time -------------------------------------------------------------------------------

    def _at(self, seconds: float) -> datetime:
        now = self.start + timedelta(seconds=float(seconds))
        self.clock.set(now)
        return now

    def _seconds(self, moment: datetime) -> float:
        return (moment - self.start).total_seconds()

    # ----- warm holds -------------------------------------------------------------------------

    def expire(self, t0: float) -> np.ndarray:
        """Let holds past their TTL expire; the users whose warm hold is gone (bool mask)."""
        due = self.warm_expires <= t0
        if not due.any():
            return due
        now = self._at(t0)
        self.counts["expired"] += self.manager.expire(now)
        gone = np.zeros_like(due)
        for user in np.flatnonzero(due):
            rid = self.warm[user]
            if rid is not None and self.manager.ledger.get(rid).state not in LIVE:
                self.warm[user], self.warm_expires[user] = None, np.inf
                gone[user] = True
        return gone

    def release_warm(self, users: np.ndarray, t0: float) -> None:
        """Give back the warm holds of ``users`` (the policy no longer asks for them)."""
        now = self._at(t0)
        for user in users:
            rid = self.warm[user]
            if rid is not None:
                self.counts["released_unused"] += self.manager.release(rid, now, "not asked for")
                self.warm[user], self.warm_expires[user] = None, np.inf

    def hold(
        self, users: np.ndarray, regions: np.ndarray, spec: np.ndarray, t0: float
    ) -> np.ndarray:
        """Request warm holds; each one's ready time in seconds (inf: refused, nothing held).

        ``spec`` is (users, 2): the vCPU and memory the hold will be scaled to when used.
        """
        ready = np.full(len(users), np.inf)
        for row, (user, region) in enumerate(zip(users, regions, strict=True)):
            reservation = self._request(int(user), int(region), spec[row], t0)
            if reservation is not None:
                self.warm[user] = reservation.reservation_id
                self.warm_expires[user] = self._seconds(reservation.expires_at)
                ready[row] = self._ready_s(reservation, t0)
        return ready

    def _request(self, user: int, region: int, spec: np.ndarray, t0: float) -> Reservation | None:
        """A reservation brought up for ``user`` in ``region`` now, or None when refused."""
        now = self._at(t0)
        row = PreallocationRow(
            user_id=self.user_ids[user],
            region=str(self.codes[region]),
            window_start=now,
            window_end=now + self.ttl,
            spec=ResourceSpec(float(spec[0]), float(spec[1]), 0.0, 0.0),
        )
        outcome = self.manager.request(user, row, now)
        if outcome.reservation_id is None or outcome.state not in LIVE:
            self.counts[f"refused_{outcome.outcome}"] += 1
            return None
        self.counts["requested"] += 1
        return self.manager.ledger.get(outcome.reservation_id)

    def _ready_s(self, reservation: Reservation, t0: float) -> float:
        if reservation.state == "warm" or reservation.ready_at is None:
            return t0
        return max(t0, self._seconds(reservation.ready_at))

    # ----- moves ------------------------------------------------------------------------------

    def move(
        self,
        users: np.ndarray,
        regions: np.ndarray,
        allocation: np.ndarray,
        from_warm: np.ndarray,
        warm_ready_s: np.ndarray,
        t0: float,
    ) -> np.ndarray:
        """Start moves; when each user is served in the new region (seconds; inf: refused).

        A move into a warm hold takes it; any other provisions cold first. The reservation is
        activated once it is ready and the state copied; a move the user had under way is
        given back first.
        """
        done = np.full(len(users), np.inf)
        self.give_back_pending(users, t0)
        for row, user in enumerate(users):
            if from_warm[row]:
                rid = self.warm[user]
                self.warm[user], self.warm_expires[user] = None, np.inf
                prepared = max(t0, warm_ready_s[row])
            else:
                reservation = self._request(int(user), int(regions[row]), allocation[row], t0)
                if reservation is None:
                    continue
                rid = reservation.reservation_id
                prepared = self._ready_s(reservation, t0)
            done[row] = self._activate(int(user), rid, prepared + self.copy_s)
        return done

    def _activate(self, user: int, rid: str | None, at_s: float) -> float:
        """Activate ``rid`` at ``at_s``; when the full allocation is ready (inf: refused)."""
        if rid is None:
            return np.inf
        now = self._at(at_s)
        try:
            reservation = self.manager.activate(rid, now)
        except ProviderError:  # the region cannot hold the full allocation: give it back
            self.counts["refused_activation"] += self.manager.release(rid, now, "no capacity")
            return np.inf
        self.pending[user] = rid
        self.counts["activated"] += 1
        return self._ready_s(reservation, at_s)

    def give_back_pending(self, users: np.ndarray, t0: float) -> None:
        """Release what the moves of ``users`` had taken (cancelled or replaced)."""
        now = self._at(t0)
        for user in users:
            rid = self.pending[user]
            if rid is not None:
                self.counts["released_cancelled"] += self.manager.release(
                    rid, now, "move cancelled"
                )
                self.pending[user] = None

    def moved(self, users: np.ndarray, ready_s: np.ndarray) -> None:
        """The moves of ``users`` completed: release the reservations they were served from."""
        for user, at_s in zip(users, ready_s, strict=True):
            source = self.serving[user]
            if source is not None:
                now = self._at(at_s)
                self.counts["released_source"] += self.manager.release(source, now, "moved out")
            self.serving[user], self.pending[user] = self.pending[user], None

    # ----- the end ----------------------------------------------------------------------------

    def close(self, t_end: float) -> dict[str, float]:
        """Release everything still held; what the ledger and the provider went through."""
        now = self._at(t_end)
        for rid in self.warm + self.pending + self.serving:
            if rid is not None:
                self.counts["released_at_end"] += self.manager.release(rid, now, "evaluation ended")
        orphans = len(self.manager.provider.inventory())
        self.manager.close()
        counts = {f"reservations_{name}": float(self.counts[name]) for name in COUNTS}
        return counts | {"orphaned_resources": float(orphans)}
