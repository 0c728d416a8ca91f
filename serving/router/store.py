"""The router's state behind one small interface: SQLite by default, Redis in production.

A store keeps four things, each change atomic:

- the config in force and the previous one (``put_config`` moves the one in force to the
  previous slot; ``rollback_config`` brings the previous one back), plus a *generation* that
  grows on every change so that a process can cheaply tell whether its cached copy is current;
- one ``RouteState`` per user (where they connect, why, their smoothed probes);
- the ``SwitchoverIntent`` records (see ``serving.router.service`` for how the migration
  executor consumes them), changed only by compare-and-set (``transition_intent``);
- the latest rejected requests with their reasons (a bounded log).

``save`` writes a batch of routes and the intents decided with them in one transaction, so a
killed router never leaves a moved route without its intent or an intent without its route.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from core.settings import Settings
from serving.router.models import (
    IntentStatus,
    Rejection,
    RouteState,
    RoutingConfig,
    StoredConfig,
    SwitchoverIntent,
)


class StaleVersionError(Exception):
    """A config push whose version does not exceed the version in force."""

    def __init__(self, pushed: int, in_force: int) -> None:
        super().__init__(f"version {pushed} is not greater than the version in force ({in_force})")
        self.pushed = pushed
        self.in_force = in_force


class NoPreviousConfigError(Exception):
    """A rollback with no previous config to return to."""


class RouterStore(Protocol):
    """What the router needs from its state, whatever holds it."""

    kind: str

    def generation(self) -> int:
        """A number that changes whenever the config in force changes."""
        ...

    def current_config(self) -> StoredConfig | None:
        """The config in force, if any."""
        ...

    def previous_config(self) -> StoredConfig | None:
        """The config a rollback would bring back, if any."""
        ...

    def put_config(self, config: RoutingConfig, pushed_at: datetime) -> None:
        """Make ``config`` the one in force, keeping the former one for rollback.

        Raises StaleVersionError, changing nothing, unless ``config.version`` exceeds the version
        in force (checked inside the same transaction as the swap).
        """
        ...

    def rollback_config(self) -> StoredConfig:
        """Bring the previous config back into force and return it; raises NoPreviousConfigError."""
        ...

    def routes(self, user_ids: Sequence[str]) -> dict[str, RouteState]:
        """The stored routes of those users that have one."""
        ...

    def hold_executor_lease(self, holder: str, ttl_s: float) -> bool:
        """Take the migration executor's lease, or renew it when ``holder`` has it; False when
        another holder's lease has not expired. One executor at a time carries intents out."""
        ...

    def release_executor_lease(self, holder: str) -> None:
        """Give the lease up, if ``holder`` has it (others may take it at once)."""
        ...

    def route_user_ids(self) -> list[str]:
        """Every user with a stored route (probed at least once), sorted."""
        ...

    def save(self, routes: Sequence[RouteState], intents: Sequence[SwitchoverIntent]) -> None:
        """Write routes and new intents together, in one transaction."""
        ...

    def intent(self, intent_id: str) -> SwitchoverIntent | None:
        """One intent by id."""
        ...

    def intents(
        self, status: IntentStatus | None = None, limit: int = 1000
    ) -> list[SwitchoverIntent]:
        """Intents, oldest first, optionally only those in one status."""
        ...

    def intents_by_id(self, intent_ids: Sequence[str]) -> dict[str, SwitchoverIntent]:
        """The intents of these ids that exist, by id (one read for a probe batch)."""
        ...

    def intent_statuses(self, intent_ids: Sequence[str]) -> dict[str, IntentStatus]:
        """The status of each of these intents that exists (cheaper than reading them whole)."""
        ...

    def transition_intent(
        self,
        intent_id: str,
        expected: IntentStatus,
        new: IntentStatus,
        at: datetime,
        step: str | None = None,
    ) -> bool:
        """Move an intent from ``expected`` to ``new`` status (appending ``step`` to its journal).

        Returns False, changing nothing, when the intent is missing or not in ``expected``.
        """
        ...

    def record_rejection(self, rejection: Rejection) -> None:
        """Keep a refused request (the latest ``rejections_kept`` are kept)."""
        ...

    def rejections(self, limit: int = 100) -> list[Rejection]:
        """The latest refused requests, newest first."""
        ...

    def ping(self) -> None:
        """Raise when the state cannot be reached."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def open_store(settings: Settings) -> RouterStore:
    """The store ``settings.router.state`` names: SQLite under the serving folder, or Redis."""
    router = settings.router
    if router.state == "redis":
        from serving.router.redis_store import RedisRouterStore

        return RedisRouterStore(router.redis_url, router.redis_prefix, router.rejections_kept)
    from serving.router.sqlite_store import SqliteRouterStore

    return SqliteRouterStore(settings.serving_dir / router.sqlite_file, router.rejections_kept)
