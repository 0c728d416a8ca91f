"""The router's switchover intents, carried out as migrations through the router store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from serving.provisioning.clock import ManualClock
from serving.router.migration_intents import execute_intents
from serving.router.migration_journal import STEPS
from serving.router.models import Resources, SwitchoverIntent
from serving.router.sqlite_store import SqliteRouterStore
from tests.serving.router.migration_world import SPEC, T0, World, world_settings

EAST, WEST, EUROPE = "aws-us-east-1", "aws-us-west-2", "aws-eu-west-1"


@pytest.fixture
def world(isolated_home: Path) -> Iterator[World]:
    built = World(world_settings(isolated_home), ManualClock(T0))
    yield built
    built.close()


@pytest.fixture
def store(world: World) -> Iterator[SqliteRouterStore]:
    opened = SqliteRouterStore(world.settings.serving_dir / "router.sqlite", rejections_kept=10)
    yield opened
    opened.close()


def intent(world: World, user: str, n: int, source: str | None, target: str) -> SwitchoverIntent:
    at = world.clock() + timedelta(seconds=n)
    return SwitchoverIntent(
        intent_id=f"{user}#{n}", user_id=user, from_region=source, to_region=target,
        reason="test", code="current_over_threshold", config_version=1,
        resources=Resources(**vars(SPEC)), created_at=at, updated_at=at,
    )  # fmt: skip


def test_pending_intents_become_migrations_and_end_done_or_failed(
    world: World, store: SqliteRouterStore
) -> None:
    world.seat({"u1": WEST, "u2": WEST, "u3": EUROPE}, {"u1": b"1", "u2": b"2", "u3": b"3"})
    world.hold("u1", EAST)
    world.boot()
    store.save(
        [],
        [
            intent(world, "u1", 1, WEST, EAST),
            intent(world, "u1", 2, EAST, EUROPE),  # after u1#1: one migration per user at once
            intent(world, "u2", 1, None, EAST),
            intent(world, "u3", 1, WEST, EAST),  # u3 is in Europe, not in the west
        ],
    )

    migrations = execute_intents(store, world.executor, world.clock, world.clock.set)

    assert sorted((m.intent_id, m.status) for m in migrations) == [
        ("u1#1", "done"), ("u1#2", "done"), ("u3#1", "refused"),
    ]  # fmt: skip
    assert world.journal.route("u1").region == EUROPE
    assert world.where("u1") == [(EUROPE, False)]
    done = store.intent("u1#1")
    assert (done.status, done.steps) == ("done", list(STEPS))
    assert store.intent("u1#2").status == "done"
    refused = store.intent("u3#1")
    assert refused.status == "failed" and "connects to aws-eu-west-1" in refused.steps[-1]
    unknown = store.intent("u2#1")
    assert unknown.status == "failed" and "current region is not known" in unknown.steps[-1]

    assert execute_intents(store, world.executor, world.clock, world.clock.set) == []


def test_intents_left_executing_by_a_killed_executor_are_finished(
    world: World, store: SqliteRouterStore
) -> None:
    world.seat({"u1": WEST}, {"u1": b"1"})
    store.save([], [intent(world, "u1", 1, WEST, EAST)])
    assert store.transition_intent("u1#1", "pending", "executing", world.clock())

    [migration] = execute_intents(store, world.executor, world.clock, world.clock.set)

    assert migration.status == "done" and migration.cold
    assert store.intent("u1#1").status == "done"
