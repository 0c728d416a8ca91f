"""The migration executor as a background thread of ``prewarm router serve``.

:class:`MigrationLoop` first recovers whatever a killed executor left open
(:meth:`~serving.router.migration.MigrationExecutor.recover`), then every
``router.migration_poll_s`` carries the router's switchover intents out with
:func:`~serving.router.migration_intents.execute_intents` on the system clock. Every
``router.feedback_export_seconds`` it also calls
``serving.feedback_export.export_router_feedback`` (a snapshot of the router's per-user
measurements and closed switchovers for the ``feedback_collect`` DAG).

Stopping is prompt: the waits (between looks, and for a booting reservation or a copy inside a
migration) end as soon as :meth:`MigrationLoop.stop` is called, abandoning a migration between
two journaled steps, which the next start recovers like a kill.

One executor at a time: the loop works only while it holds the router store's executor lease
(``router.executor_lease_seconds``, renewed on every pass and during every wait), so the router
can run its executor in-process and a separate ``prewarm router migrate`` process can stand by,
or take it over, without two executors ever carrying the same intents out. A loop that gains the
lease recovers first (whoever held it before may have died mid-migration); one that loses it
abandons its migration between two journaled steps, as on a stop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from core.settings import Settings
from serving.feedback_export import export_router_feedback
from serving.provisioning.clock import Clock, system_clock
from serving.router.migration import MigrationExecutor
from serving.router.migration_intents import execute_intents
from serving.router.store import RouterStore

log = logging.getLogger(__name__)



class LoopStoppedError(Exception):
    """Raised inside a wait when the loop is asked to stop, or has lost the executor lease."""


class MigrationLoop:
    """Runs the migration executor (and the feedback export) until stopped."""

    def __init__(
        self,
        settings: Settings,
        store: RouterStore,
        clock: Clock = system_clock,
        faults: Callable[[str], None] | None = None,
    ) -> None:
        """``faults``: the executor's fault points (tests use them to look in between steps)."""
        self.settings = settings
        self.store = store
        self.clock = clock
        self.faults = faults
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.holds_lease = False
        self._just_gained = False
        self._next_export: datetime | None = None

    def start(self) -> None:
        """Start the loop in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="migration-executor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the loop to stop and wait for it (at most ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("migration executor still busy after %.0f s", timeout_s)

    def run(self) -> None:
        """While holding the lease: recover, then carry intents out every poll interval, until
        :meth:`stop`."""
        router = self.settings.router
        executor = MigrationExecutor.from_settings(self.settings, self.clock, self.faults)
        try:
            while not self._stop.is_set():
                if self._renew_lease():
                    try:
                        self._pass(executor)
                    except LoopStoppedError:
                        if self._stop.is_set():
                            break
                self._stop.wait(router.migration_poll_s)
        finally:
            executor.close()
            self._release_lease()

    def _pass(self, executor: MigrationExecutor) -> None:
        """One pass under the lease (a recovery first, when the lease was just gained)."""
        if self._just_gained:
            self._just_gained = False
            self._guarded("recovery", self.recover, executor)
        self._guarded("migration executor pass", self.execute, executor)
        self._export_if_due()

    def _export_if_due(self) -> None:
        """The feedback export, when its interval has passed (also called while a migration
        waits, so that a long boot does not hold the router's measurements back)."""
        now = self.clock()
        if self._next_export is None or now >= self._next_export:
            interval = timedelta(seconds=self.settings.router.feedback_export_seconds)
            self._next_export = now + interval
            self._guarded("feedback export", self.export_feedback, now)

    def _renew_lease(self) -> bool:
        """Take or renew the executor lease; whether this loop holds it now."""
        try:
            held = self.store.hold_executor_lease(
                self.holder, self.settings.router.executor_lease_seconds
            )
        except Exception:
            log.exception("could not reach the router store for the executor lease")
            held = False
        if held and not self.holds_lease:
            log.info("migration executor %s holds the lease", self.holder)
            self._just_gained = True
        elif self.holds_lease and not held:
            log.warning("migration executor %s lost the lease; standing by", self.holder)
        self.holds_lease = held
        return held

    def _release_lease(self) -> None:
        if self.holds_lease:
            try:
                self.store.release_executor_lease(self.holder)
            except Exception:
                log.exception("could not release the executor lease (it expires by itself)")
            self.holds_lease = False

    def recover(self, executor: MigrationExecutor) -> None:
        """Finish what a killed executor left open (back before verify, else on)."""
        report = executor.recover(self.clock())
        if report.rolled_back or report.rolled_forward:
            log.info(
                "recovered migrations: %d rolled back, %d rolled forward",
                len(report.rolled_back),
                len(report.rolled_forward),
            )

    def execute(self, executor: MigrationExecutor) -> None:
        """One pass: every open intent (up to ``migration_batch``) carried to its end."""
        done = execute_intents(
            self.store,
            executor,
            self.clock,
            self._wait_until,
            limit=self.settings.router.migration_batch,
        )
        if done:
            log.info("carried out %d switchover intents", len(done))

    def export_feedback(self, now: datetime) -> None:
        """Export the router's measurements for the feedback DAG (nothing when none changed)."""
        batch = export_router_feedback(self.settings, now, self.store)
        if batch is not None:
            log.info("exported router feedback to %s", batch)

    def _guarded(self, what: str, step: Callable[..., None], *args: object) -> None:
        """Run ``step``; a failure is logged and retried on the next pass (the journal makes
        a retry safe), a stop request is passed on."""
        try:
            step(*args)
        except LoopStoppedError:
            raise
        except Exception:
            log.exception("%s failed; retrying on the next pass", what)

    def _wait_until(self, moment: datetime) -> None:
        """Wait on the clock until ``moment``, renewing the lease and exporting feedback when due;
        raises LoopStoppedError when stopped meanwhile or when the lease is lost."""
        router = self.settings.router
        step = min(router.executor_lease_seconds / 3, router.feedback_export_seconds)
        deadline = time.monotonic() + max(0.0, (moment - self.clock()).total_seconds())
        while True:
            left = deadline - time.monotonic()
            if self._stop.wait(max(0.0, min(left, step))):
                raise LoopStoppedError
            if left <= step:
                return
            if not self._renew_lease():
                raise LoopStoppedError
            self._export_if_due()
