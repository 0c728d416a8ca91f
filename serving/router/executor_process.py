"""The migration executor as a process of its own (``prewarm router migrate``).

The same :class:`~serving.router.migration_loop.MigrationLoop` the router can run in-process,
here in the foreground of a process that stops it cleanly on SIGTERM or SIGINT (a migration is
abandoned between two journaled steps and the executor lease is given back, so a standby takes
over at once instead of after the lease lapses).
"""

from __future__ import annotations

import logging
import signal
import threading

from core.settings import Settings, get_settings
from serving.router.migration_loop import MigrationLoop
from serving.router.store import open_store

log = logging.getLogger(__name__)


def run_executor(settings: Settings | None = None) -> None:
    """Carry the router's switchover intents out until SIGTERM or SIGINT."""
    settings = settings or get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    store = open_store(settings)
    loop = MigrationLoop(settings, store)
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    loop.start()
    log.info("migration executor %s started on the router's %s state", loop.holder, store.kind)
    try:
        stopping.wait()
    finally:
        loop.stop()
        store.close()
        log.info("migration executor %s stopped", loop.holder)
