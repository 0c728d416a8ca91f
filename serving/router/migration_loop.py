"""The migration executor as a background thread of ``prewarm router serve``.

:class:`MigrationLoop` first recovers whatever a killed executor left open
(:meth:`~serving.router.migration.MigrationExecutor.recover`), then every
``router.migration_poll_s`` carries the router's switchover intents out with
:func:`~serving.router.migration_intents.execute_intents` on the system clock. Every
``router.feedback_export_seconds`` it also calls
``serving.feedback.export_router_feedback(settings, now)`` when that function exists (it
snapshots the router's per-user measurements for the feedback DAG); without it the export is
skipped, with one INFO line.

Stopping is prompt: the waits (between looks, and for a booting reservation or a copy inside a
migration) end as soon as :meth:`MigrationLoop.stop` is called, abandoning a migration between
two journaled steps, which the next start recovers like a kill.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from core.settings import Settings
from serving.provisioning.clock import Clock, system_clock
from serving.router.migration import MigrationExecutor
from serving.router.migration_intents import execute_intents
from serving.router.store import RouterStore

log = logging.getLogger(__name__)

FEEDBACK_MODULE = "serving.feedback"
FEEDBACK_FUNCTION = "export_router_feedback"
FeedbackExport = Callable[[Settings, datetime], object]


class LoopStoppedError(Exception):
    """Raised inside a wait when the loop is asked to stop."""


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
        self._export: FeedbackExport | None = None
        self._export_resolved = False

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
        """Recover, then carry intents out every poll interval until :meth:`stop`."""
        router = self.settings.router
        executor = MigrationExecutor.from_settings(self.settings, self.clock, self.faults)
        try:
            self._guarded("recovery", self.recover, executor)
            next_export = self.clock()
            while not self._stop.is_set():
                self._guarded("migration executor pass", self.execute, executor)
                now = self.clock()
                if now >= next_export:
                    next_export = now + timedelta(seconds=router.feedback_export_seconds)
                    self._guarded("feedback export", self.export_feedback, now)
                self._stop.wait(router.migration_poll_s)
        except LoopStoppedError:
            pass
        finally:
            executor.close()

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
        """Export the router's measurements for the feedback DAG, when the exporter exists."""
        if not self._export_resolved:
            self._export = _feedback_exporter()
            self._export_resolved = True
        if self._export is not None:
            self._export(self.settings, now)

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
        """Wait on the clock until ``moment``; raises LoopStoppedError when stopped meanwhile."""
        seconds = max(0.0, (moment - self.clock()).total_seconds())
        if self._stop.wait(seconds):
            raise LoopStoppedError


def _feedback_exporter() -> FeedbackExport | None:
    """``serving.feedback.export_router_feedback``, or None (logged once) when not there."""
    try:
        module = importlib.import_module(FEEDBACK_MODULE)
    except ModuleNotFoundError as error:
        if error.name != FEEDBACK_MODULE:
            raise
        module = None
    export = getattr(module, FEEDBACK_FUNCTION, None)
    if export is None:
        log.info("%s.%s not available: feedback export skipped", FEEDBACK_MODULE, FEEDBACK_FUNCTION)
    return export
