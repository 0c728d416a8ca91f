"""Session migration: the steps, the reactive path, the copy delay, rollbacks and recovery."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from core.regions import load_regions
from serving.provisioning.clock import ManualClock
from serving.provisioning.provider import ResourceSpec
from serving.router.migration import MigrationRequest, copy_seconds
from serving.router.migration_faults import POINTS
from serving.router.migration_journal import STEPS, MigrationBusyError
from serving.sessions.state import SessionFrozenError, SessionState
from tests.serving.router.migration_world import SPEC, T0, World, digest, world_settings

EAST, WEST = "aws-us-east-1", "aws-us-west-2"
FORWARD_POINTS = tuple(p for p in POINTS if not p.startswith("rollback:"))
WorldFactory = Callable[..., World]


@pytest.fixture
def make_world(isolated_home: Path) -> Iterator[WorldFactory]:
    """Builds worlds on this test's home (all sharing its databases); closes them afterwards."""
    built: list[World] = []

    def make(faults: Callable[[str], None] | None = None, **router: object) -> World:
        world = World(world_settings(isolated_home, **router), ManualClock(T0), faults)
        if built:
            world.clock.set(built[-1].clock())
        built.append(world)
        return world

    yield make
    for world in built:
        world.close()


class Watcher:
    """At every fault point: the session exists, is writable in at most one place, and that
    place is where the route points. Records the route seen at each point."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.world: World | None = None
        self.routes: list[tuple[str, str]] = []

    def __call__(self, point: str) -> None:
        assert self.world is not None
        route = self.world.journal.route(self.user)
        copies = self.world.where(self.user)
        writable = [region for region, frozen in copies if not frozen]
        assert copies, f"{point}: the session is nowhere"
        assert writable in ([], [route.region]), f"{point}: writable in {writable}, route {route}"
        self.routes.append((point, route.region))


def watched(make_world: WorldFactory, user: str = "u1", **router: object) -> tuple[World, Watcher]:
    watcher = Watcher(user)
    world = make_world(faults=watcher, **router)
    watcher.world = world
    return world, watcher


def test_a_warm_migration_moves_the_session_and_releases_the_source(
    make_world: WorldFactory,
) -> None:
    world, watcher = watched(make_world)
    data = b"session state " * 1000
    source = world.seat({"u1": EAST}, {"u1": data})["u1"]
    target = world.hold("u1", WEST)
    world.boot()

    [done] = world.executor.run([world.request("u1", "u1#1", WEST)], world.clock, world.clock.set)

    assert (done.status, done.step, done.cold) == ("done", "released", False)
    assert world.where("u1") == [(WEST, False)]
    assert world.sessions[WEST].get("u1").checksum == digest(data)
    assert world.journal.route("u1").region == WEST
    assert world.ledger.get(source.reservation_id).state == "released"
    assert world.ledger.get(target.reservation_id).state == "active"
    assert [e.step for e in world.journal.entries(done.migration_id)] == list(STEPS)
    assert [point for point, _ in watcher.routes] == list(FORWARD_POINTS)
    flip = FORWARD_POINTS.index("before:released")
    assert {region for _, region in watcher.routes[:flip]} == {EAST}
    assert {region for _, region in watcher.routes[flip:]} == {WEST}
    world.sessions[WEST].put("u1", b"written at the target", expected_version=done.version)


def test_the_reactive_path_provisions_cold_and_serves_from_the_source_meanwhile(
    make_world: WorldFactory,
) -> None:
    world, _ = watched(make_world)
    world.seat({"u1": EAST}, {"u1": b"v1"})
    start = world.clock()

    migration = world.executor.begin(world.request("u1", "u1#1", WEST), start)
    assert migration.cold and migration.target_reservation_id is None
    waiting = world.executor.advance(migration.migration_id, start)

    boot = timedelta(seconds=world.settings.provisioning.cold_boot_seconds)
    assert (waiting.status, waiting.step, waiting.due_at) == ("running", "planned", start + boot)
    assert world.ledger.get(waiting.target_reservation_id).state == "provisioning"
    written = world.sessions[EAST].put("u1", b"v2, written during the cold boot")

    world.clock.set(waiting.due_at)
    [done] = world.executor.finish([migration.migration_id], world.clock, world.clock.set)
    assert done.status == "done"
    assert world.ledger.get(done.target_reservation_id).state == "active"
    assert world.sessions[WEST].get("u1").checksum == written.checksum
    assert world.where("u1") == [(WEST, False)]


def test_the_copy_takes_the_configured_time_on_the_clock(make_world: WorldFactory) -> None:
    world, _ = watched(make_world, state_copy_fixed_s=2.0, state_copy_s_per_mb=3.0)
    world.seat({"u1": EAST}, {"u1": bytes(500_000)})
    world.hold("u1", WEST)
    world.boot()
    now = world.clock()
    assert copy_seconds(500_000, world.settings.router) == pytest.approx(3.5)

    migration = world.executor.begin(world.request("u1", "u1#1", WEST), now)
    frozen = world.executor.advance(migration.migration_id, now)
    assert (frozen.step, frozen.due_at) == ("frozen", now + timedelta(seconds=3.5))
    with pytest.raises(SessionFrozenError):
        world.sessions[EAST].put("u1", b"a write while frozen")

    almost = world.executor.advance(migration.migration_id, now + timedelta(seconds=3.4))
    assert almost.step == "frozen"
    assert world.executor.advance(migration.migration_id, frozen.due_at).status == "done"


def test_no_session_at_the_source_rolls_back_and_touches_nothing(
    make_world: WorldFactory,
) -> None:
    world = make_world()
    source = world.seat({"u1": EAST}, {"u1": b"x"})["u1"]
    world.sessions[EAST].delete("u1")
    target = world.hold("u1", WEST)
    world.boot()

    [migration] = world.executor.run(
        [world.request("u1", "u1#1", WEST)], world.clock, world.clock.set
    )

    assert migration.status == "rolled_back"
    assert "no session for u1" in migration.reason
    assert world.ledger.get(source.reservation_id).state == "active"
    assert world.ledger.get(target.reservation_id).state == "warm"
    assert world.journal.route("u1").region == EAST


def test_a_corrupted_copy_fails_verification_and_rolls_back(make_world: WorldFactory) -> None:
    watcher = Watcher("u1")

    def corrupt(point: str) -> None:
        if point == "after:copied":
            copy = world.sessions[WEST].get("u1")
            world.sessions[WEST].restore(SessionState.of("u1", b"garbled", copy.version, True))
        watcher(point)

    world = make_world(faults=corrupt)
    watcher.world = world
    world.seat({"u1": EAST}, {"u1": b"the real state"})
    world.hold("u1", WEST)
    world.boot()

    [migration] = world.executor.run(
        [world.request("u1", "u1#1", WEST)], world.clock, world.clock.set
    )

    assert migration.status == "rolled_back"
    assert "does not match" in migration.reason
    assert world.where("u1") == [(EAST, False)]
    assert world.sessions[EAST].get("u1").data == b"the real state"
    assert "rollback:unfrozen" in [point for point, _ in watcher.routes]


def test_a_refused_cold_start_rolls_back_with_the_reason(make_world: WorldFactory) -> None:
    world = make_world()
    source = world.seat({"u1": EAST}, {"u1": b"x"})["u1"]
    too_big = ResourceSpec(cpu_cores=1e9, ram_gb=1.0, storage_iops=1.0, network_mbps=1.0)
    request = MigrationRequest("u1", "u1#1", EAST, WEST, too_big)

    [migration] = world.executor.run([request], world.clock, world.clock.set)

    assert migration.status == "rolled_back"
    assert "no_capacity" in migration.reason
    cold = world.ledger.reservations(user_id="u1", region=WEST)
    assert [r.state for r in cold] == ["released"]
    assert world.ledger.get(source.reservation_id).state == "active"
    assert world.where("u1") == [(EAST, False)]


def test_no_room_to_scale_up_rolls_back_before_the_redirect(make_world: WorldFactory) -> None:
    world = make_world()
    world.seat({"u1": EAST}, {"u1": b"x"})
    room = load_regions(world.settings.regions_file)[WEST].capacity_vcpu
    target = world.hold("u1", WEST, ResourceSpec(room * 2, 1.0, 1.0, 1.0))  # warm: half of it
    world.boot()

    [migration] = world.executor.run(
        [world.request("u1", "u1#1", WEST)], world.clock, world.clock.set
    )

    assert migration.status == "rolled_back"
    assert "started failed" in migration.reason
    assert world.ledger.get(target.reservation_id).state == "warm"
    assert world.journal.route("u1").region == EAST
    assert world.where("u1") == [(EAST, False)]


def test_an_intent_from_where_the_user_is_not_is_refused(make_world: WorldFactory) -> None:
    world = make_world()
    world.seat({"u1": WEST}, {"u1": b"x"})

    migration = world.executor.begin(
        MigrationRequest("u1", "u1#1", EAST, "aws-eu-west-1", SPEC), world.clock()
    )

    assert migration.status == "refused"
    assert "connects to aws-us-west-2" in migration.reason
    assert world.executor.advance(migration.migration_id, world.clock()) == migration


def test_one_open_migration_per_user(make_world: WorldFactory) -> None:
    world = make_world()
    world.seat({"u1": EAST}, {"u1": b"x"})
    first = world.executor.begin(world.request("u1", "u1#1", WEST), world.clock())

    with pytest.raises(MigrationBusyError):
        world.executor.begin(world.request("u1", "u1#2", "aws-eu-west-1"), world.clock())
    assert world.executor.begin(world.request("u1", "u1#1", WEST), world.clock()) == first


def test_running_a_migration_again_changes_nothing(make_world: WorldFactory) -> None:
    world = make_world()
    source = world.seat({"u1": EAST}, {"u1": b"x"})["u1"]
    world.hold("u1", WEST)
    world.boot()
    request = world.request("u1", "u1#1", WEST)

    [first] = world.executor.run([request], world.clock, world.clock.set)
    [again] = world.executor.run([request], world.clock, world.clock.set)

    assert again == first
    releases = [e for e in world.ledger.journal(source.reservation_id) if e.to_state == "released"]
    assert len(releases) == 1


class Crash(BaseException):
    """Stands for the process dying at a fault point (the subprocess test uses SIGKILL)."""


COLD_POINTS = ("before:prepared", "after:prepared", "after:frozen", "before:started")
"""Where the reactive path differs: before and after its cold request, either side of verify."""


@pytest.mark.parametrize(
    ("point", "cold"),
    [(p, False) for p in FORWARD_POINTS] + [(p, True) for p in COLD_POINTS],
    ids=[f"{p}-warm" for p in FORWARD_POINTS] + [f"{p}-cold" for p in COLD_POINTS],
)
def test_a_crash_at_any_step_is_recovered_back_before_verify_and_forward_after(
    make_world: WorldFactory, point: str, cold: bool
) -> None:
    def crash(reached: str) -> None:
        if reached == point:
            raise Crash(point)

    world = make_world(faults=crash)
    source = world.seat({"u1": EAST}, {"u1": b"precious"})["u1"]
    if not cold:
        world.hold("u1", WEST)
        world.boot()
    with pytest.raises(Crash):
        world.executor.run([world.request("u1", "u1#1", WEST)], world.clock, world.clock.set)

    restarted = make_world()
    report = restarted.executor.recover(restarted.clock())

    forward = FORWARD_POINTS.index(point) >= FORWARD_POINTS.index("before:started")
    [migration] = restarted.journal.migrations()
    assert migration.status == ("done" if forward else "rolled_back")
    assert (report.rolled_forward if forward else report.rolled_back) == [migration.migration_id]
    here = WEST if forward else EAST
    assert restarted.where("u1") == [(here, False)]
    assert restarted.journal.route("u1").region == here
    assert restarted.sessions[here].get("u1").data == b"precious"
    source_state = restarted.ledger.get(source.reservation_id).state
    assert source_state == ("released" if forward else "active")
    targets = [r.state for r in restarted.ledger.reservations(user_id="u1", region=WEST)]
    if forward:
        assert targets == ["active"]
    elif cold:  # released, unless the crash came before it was even requested
        assert targets == ([] if point == "before:prepared" else ["released"])
    else:
        assert targets == ["warm"]


def test_migrations_work_on_redis_session_stores(
    make_world: WorldFactory, redis_prefix: str
) -> None:
    world = make_world(session_store="redis", redis_prefix=redis_prefix)
    world.seat({"u1": EAST, "u2": EAST}, {"u1": b"one", "u2": b"two"})

    done = world.executor.run(
        [world.request("u1", "u1#1", WEST), world.request("u2", "u2#1", "aws-eu-west-1")],
        world.clock,
        world.clock.set,
    )

    assert [m.status for m in done] == ["done", "done"]
    assert world.sessions[WEST].list() == ["u1"]
    assert world.sessions["aws-eu-west-1"].get("u2").data == b"two"
    assert world.sessions[EAST].list() == []



def test_the_journal_works_on_postgresql(make_world: WorldFactory, pg_url: str) -> None:
    world = make_world(migration_journal_url=pg_url)
    world.seat({"u1": EAST}, {"u1": b"x"})
    first = world.executor.begin(world.request("u1", "u1#1", WEST), world.clock())
    with pytest.raises(MigrationBusyError):
        world.executor.begin(world.request("u1", "u1#2", "aws-eu-west-1"), world.clock())

    [done] = world.executor.finish([first.migration_id], world.clock, world.clock.set)

    assert done.status == "done"
    assert world.journal.route("u1").region == WEST
    assert world.journal.engine.dialect.name == "postgresql"
