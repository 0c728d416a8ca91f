"""Both router stores (SQLite and Redis) keep the same promises."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from core.settings import Settings
from serving.router.models import Rejection, Resources, RouteState, SwitchoverIntent
from serving.router.sqlite_store import SqliteRouterStore
from serving.router.store import (
    NoPreviousConfigError,
    RouterStore,
    StaleVersionError,
    open_store,
)
from tests.serving.router.conftest import EAST, REDIS_URL, WEST, config

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def intent(user: str, n: int, at: datetime = T0) -> SwitchoverIntent:
    return SwitchoverIntent(
        intent_id=f"{user}#{n}", user_id=user, from_region=WEST, to_region=EAST, reason="test",
        code="current_over_threshold", config_version=1,
        resources=Resources(cpu_cores=1, ram_gb=2, storage_iops=3, network_mbps=4),
        created_at=at, updated_at=at,
    )  # fmt: skip


def test_config_swap_keeps_the_previous_one_and_rolls_back_once(store: RouterStore) -> None:
    assert store.current_config() is None and store.generation() == 0
    store.put_config(config(1), T0)
    store.put_config(config(2), T0)
    assert store.current_config().config.version == 2
    assert store.previous_config().config.version == 1
    assert store.generation() == 2

    restored = store.rollback_config()
    assert restored.config.version == 1
    assert store.current_config().config == config(1)
    assert store.previous_config() is None
    assert store.generation() == 3
    with pytest.raises(NoPreviousConfigError):
        store.rollback_config()


def test_a_version_not_above_the_one_in_force_changes_nothing(store: RouterStore) -> None:
    store.put_config(config(5), T0)
    for stale in (5, 4):
        with pytest.raises(StaleVersionError):
            store.put_config(config(stale), T0)
    assert store.current_config().config.version == 5
    assert store.previous_config() is None
    assert store.generation() == 1


def test_routes_and_intents_are_saved_together(store: RouterStore) -> None:
    routes = [
        RouteState(user_id=u, region=EAST, reason="r", since=T0, pending_intent=f"{u}#1")
        for u in ("a", "b")
    ]
    store.save(routes, [intent("a", 1), intent("b", 1, T0 + timedelta(seconds=1))])
    assert set(store.routes(["a", "b", "nobody"])) == {"a", "b"}
    assert store.routes(["a"])["a"] == routes[0]
    assert store.route_user_ids() == ["a", "b"]
    assert [i.intent_id for i in store.intents("pending")] == ["a#1", "b#1"]

    # Saving the same intent again (a retried batch) never duplicates or resets it.
    assert store.transition_intent("a#1", "pending", "executing", T0)
    store.save(routes[:1], [intent("a", 1)])
    assert store.intent("a#1").status == "executing"
    assert len(store.intents()) == 2


def test_intents_are_read_by_id_in_one_call(store: RouterStore) -> None:
    store.save([], [intent("a", 1), intent("b", 1)])
    assert store.transition_intent("b#1", "pending", "executing", T0)
    found = store.intents_by_id(["b#1", "nobody#1", "a#1", "b#1"])
    assert {i: found[i].status for i in found} == {"a#1": "pending", "b#1": "executing"}
    assert store.intents_by_id([]) == {}


def test_intents_change_only_by_compare_and_set(store: RouterStore) -> None:
    store.save([], [intent("a", 1)])
    assert store.transition_intent("a#1", "pending", "executing", T0)
    assert not store.transition_intent("a#1", "pending", "executing", T0)  # already claimed
    assert store.transition_intent("a#1", "executing", "executing", T0, step="freeze")
    assert store.transition_intent("a#1", "executing", "done", T0, step="release")
    assert not store.transition_intent("missing#1", "pending", "done", T0)
    done = store.intent("a#1")
    assert (done.status, done.steps) == ("done", ["freeze", "release"])
    assert store.intents("pending") == [] and [i.intent_id for i in store.intents("done")] == [
        "a#1"
    ]


def test_rejections_are_kept_newest_first_and_bounded(store: RouterStore) -> None:
    for n in range(5):  # the fixture keeps the latest 3
        store.record_rejection(
            Rejection(at=T0, endpoint="/v1/probes", reason=f"r{n}", detail="d", body="b")
        )
    assert [r.reason for r in store.rejections()] == ["r4", "r3", "r2"]


def test_sqlite_state_survives_a_restart(settings: Settings) -> None:
    path = settings.serving_dir / "router.sqlite"
    first = SqliteRouterStore(path, rejections_kept=10)
    first.put_config(config(1), T0)
    first.put_config(config(2), T0)
    first.save([RouteState(user_id="a", region=EAST, reason="r", since=T0)], [intent("a", 1)])
    first.close()

    again = SqliteRouterStore(path, rejections_kept=10)
    assert again.current_config().config.version == 2
    assert again.previous_config().config.version == 1
    assert again.routes(["a"])["a"].region == EAST
    assert again.intent("a#1") is not None
    again.close()


def test_open_store_follows_settings(settings: Settings, redis_prefix: str) -> None:
    sqlite = open_store(settings)
    assert sqlite.kind == "sqlite"
    assert (settings.serving_dir / settings.router.sqlite_file).exists()
    sqlite.close()
    redis_settings = settings.model_copy(
        update={"router": settings.router.model_copy(
            update={"state": "redis", "redis_url": REDIS_URL, "redis_prefix": redis_prefix})}
    )  # fmt: skip
    redis = open_store(redis_settings)
    assert redis.kind == "redis"
    redis.put_config(config(1), T0)
    assert redis.current_config().config.version == 1
    redis.close()


def test_one_executor_holds_the_lease_until_it_gives_it_back_or_it_lapses(
    store: RouterStore,
) -> None:
    assert store.hold_executor_lease("a", 30)
    assert store.hold_executor_lease("a", 30)  # a renewal
    assert not store.hold_executor_lease("b", 30)
    store.release_executor_lease("b")  # not b's to give back: nothing changes
    assert not store.hold_executor_lease("b", 30)

    store.release_executor_lease("a")
    assert store.hold_executor_lease("b", 0.2)
    assert not store.hold_executor_lease("a", 30)
    time.sleep(0.3)  # b died without giving it back
    assert store.hold_executor_lease("a", 30)
