"""Carrying out the router's switchover intents as journaled migrations.

The router records a ``SwitchoverIntent`` when it decides to move a user (see
``serving.router.service``). :func:`execute_intents` is the executor that service describes,
working through the router store alone: it claims pending intents (``pending → executing``,
one claimer wins), runs them through :class:`~serving.router.migration.MigrationExecutor`,
copies the migration journal's steps onto each intent, and closes it ``done`` or ``failed``
(rolled back or refused, with the reason as its last step). Intents a killed executor left
``executing`` are picked up again; the migration journal, not the intent, says how far each got.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from serving.provisioning.clock import Clock
from serving.provisioning.provider import ResourceSpec
from serving.router.migration import MigrationExecutor, MigrationRequest, WaitUntil
from serving.router.migration_journal import Migration, migration_key
from serving.router.models import SwitchoverIntent
from serving.router.store import RouterStore


def request_for(intent: SwitchoverIntent) -> MigrationRequest:
    """The migration an intent asks for; ValueError when it names no source region."""
    if intent.from_region is None:
        raise ValueError(f"{intent.intent_id}: the user's current region is not known")
    return MigrationRequest(
        user_id=intent.user_id,
        intent_id=intent.intent_id,
        from_region=intent.from_region,
        to_region=intent.to_region,
        spec=ResourceSpec(**intent.resources.model_dump()),
    )


def execute_intents(
    store: RouterStore,
    executor: MigrationExecutor,
    clock: Clock,
    wait_until: WaitUntil,
    limit: int = 1000,
) -> list[Migration]:
    """Run every open intent (up to ``limit``) to its end; the migrations, in intent order.

    A user's intents run one after another (oldest first), different users' side by side.
    """
    executor.recover(clock())
    claimed = store.intents("executing", limit)
    for intent in store.intents("pending", limit):
        if store.transition_intent(intent.intent_id, "pending", "executing", clock()):
            claimed.append(intent)
    finished: list[Migration] = []
    for wave in _waves(claimed):
        requests = []
        for intent in wave:
            try:
                requests.append(request_for(intent))
            except ValueError as error:
                store.transition_intent(
                    intent.intent_id, "executing", "failed", clock(), step=f"refused: {error}"
                )
        for migration in executor.run(requests, clock, wait_until):
            _close(store, executor, migration, clock())
            finished.append(migration)
    return finished


def _waves(intents: Iterable[SwitchoverIntent]) -> list[list[SwitchoverIntent]]:
    """Intents split so that no wave holds two of one user (a user has one migration open)."""
    waves: list[list[SwitchoverIntent]] = []
    seen: dict[str, int] = {}
    for intent in sorted(intents, key=lambda i: (i.created_at, i.intent_id)):
        number = seen.get(intent.user_id, 0)
        seen[intent.user_id] = number + 1
        if number == len(waves):
            waves.append([])
        waves[number].append(intent)
    return waves


def _close(
    store: RouterStore, executor: MigrationExecutor, migration: Migration, now: datetime
) -> None:
    """Copy the journal's steps onto the intent, then mark it done or failed."""
    intent_id = migration.intent_id
    intent = store.intent(intent_id)
    if intent is None or intent.status != "executing":
        return
    assert migration_key(intent.user_id, intent_id) == migration.migration_id
    steps = [
        e.step
        for e in executor.journal.entries(migration.migration_id)
        if e.status in {"running", "done"}
    ]
    for step in dict.fromkeys(steps):
        if step not in intent.steps:
            store.transition_intent(intent_id, "executing", "executing", now, step=step)
    if migration.status == "done":
        store.transition_intent(intent_id, "executing", "done", now)
    else:
        store.transition_intent(
            intent_id, "executing", "failed", now, step=f"{migration.status}: {migration.reason}"
        )
