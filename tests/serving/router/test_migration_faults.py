"""Acceptance (issue 6): kill the migrating process at every step; after restarts nothing is lost.

Every round, each user gets one switchover intent to another region, most with a warm hold
waiting there and the rest on the reactive (cold) path, and some sessions are written first.
The round's migrations run in a child process that SIGKILLs itself at a fault point
(``PREWARM_MIGRATION_KILL_AT``, cycling through every point) the n-th time it gets there; a
fresh child recovers (itself killed now and then, mid-rollback or mid-roll-forward, and then
recovered again), and the next child carries on with the round until one finishes it.

After every round each session exists exactly once, writable, where its route points, with the
checksum of its last write; at the end the ledger's journal and the local cloud's inventory
show every source reservation released exactly once and nothing held that should not be.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.settings import Settings
from serving.provisioning.clock import ManualClock
from serving.provisioning.local import resources as local_resources
from serving.provisioning.reconcile import find_drift
from serving.provisioning.states import CLOSING, LIVE
from serving.router.migration import MigrationExecutor, MigrationRequest
from serving.router.migration_faults import ENV, POINTS
from serving.router.migration_journal import STEPS, migration_key
from tests.serving.router.migration_world import REGIONS, T0, World, digest, world_settings

FORK = multiprocessing.get_context("fork")
USERS = 100
ROUNDS = 10  # USERS * ROUNDS migrations
KILLS_PER_ROUND = (
    5  # migrating children killed per round; their recoveries are killed too, at times
)
WARM_SHARE = 0.7  # intents with a warm hold at the target; the rest take the reactive path
WRITE_SHARE = 0.2  # sessions written by their user before each round
RECOVERY_KILL_SHARE = 0.5
FORWARD_POINTS = tuple(p for p in POINTS if not p.startswith("rollback:"))
ROLLBACK_POINTS = tuple(p for p in POINTS if p.startswith("rollback:"))
AFTER_VERIFY = FORWARD_POINTS[FORWARD_POINTS.index("before:started") :]
CONCURRENT = 4  # migrations a child carries on at once (all open ones are cut short by a kill)
CHILD_TIME = timedelta(hours=2)  # simulated time a child may use, at most (under 1 h)


def _child(settings: Settings, start: datetime, kill: str | None, requests: list | None) -> None:
    """Migrate ``requests`` (or, with None, recover), dying at ``kill`` if it is reached."""
    if kill:
        os.environ[ENV] = kill
    else:
        os.environ.pop(ENV, None)
    clock = ManualClock(start)
    executor = MigrationExecutor.from_settings(settings, clock)
    if requests is None:
        executor.recover(clock())
    else:
        for start in range(0, len(requests), CONCURRENT):
            executor.run(requests[start : start + CONCURRENT], clock, clock.set)
    executor.close()


class Harness:
    """The parent: sets rounds up, runs and kills children, checks the world after each."""

    def __init__(self, home: Path, seed: int) -> None:
        self.settings = world_settings(home)
        self.rng = random.Random(seed)
        self.world = World(self.settings, ManualClock(T0))
        self.users = [f"user-{i:03d}" for i in range(USERS)]
        self.expected: dict[str, bytes] = {}
        self.killed: Counter[str] = Counter()
        self.forward_points = self._cycle(FORWARD_POINTS)
        self.rollback_points = self._cycle(ROLLBACK_POINTS)
        self.after_verify_points = self._cycle(AFTER_VERIFY)

    def _cycle(self, points: tuple[str, ...]):
        while True:
            shuffled = list(points)
            self.rng.shuffle(shuffled)
            yield from shuffled

    def _data(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(64, 64_000))

    # -- setting up --------------------------------------------------------------------------

    def seat_everyone(self) -> None:
        homes = {user: self.rng.choice(REGIONS) for user in self.users}
        self.expected = {user: self._data() for user in self.users}
        self.world.seat(homes, self.expected)

    def prepare_round(self, number: int) -> list[MigrationRequest]:
        """Writes by some users, warm holds for most targets, one intent per user."""
        routes = self.world.journal.routes()
        requests = []
        for user in self.users:
            here = routes[user].region
            if self.rng.random() < WRITE_SHARE:
                self.expected[user] = self._data()
                self.world.sessions[here].put(user, self.expected[user])
            target = self.rng.choice([r for r in REGIONS if r != here])
            if self.rng.random() < WARM_SHARE:
                self.world.hold(user, target)
            requests.append(self.world.request(user, f"{user}#{number}", target))
        self.world.boot()
        return requests

    # -- children ----------------------------------------------------------------------------

    def spawn(self, kill: str | None, requests: list | None) -> bool:
        """Run one child from the current simulated time; True if it was killed."""
        self.world.executor.close()  # no pooled connection may cross the fork
        start = self.world.clock()
        process = FORK.Process(target=_child, args=(self.settings, start, kill, requests))
        process.start()
        process.join(timeout=300)
        self.world.clock.set(start + CHILD_TIME)
        assert process.exitcode in (0, -signal.SIGKILL), f"child failed: {process.exitcode}"
        if process.exitcode == -signal.SIGKILL:
            assert kill is not None
            self.killed[kill.partition("@")[0]] += 1
            return True
        return False

    def unfinished(self, requests: list[MigrationRequest]) -> int:
        finished = {m.migration_id for m in self.world.journal.migrations() if m.finished}
        return sum(migration_key(r.user_id, r.intent_id) not in finished for r in requests)

    def recover(self) -> None:
        """Recover in a fresh process, killing that one too at times; then recover for good."""
        if self.rng.random() < RECOVERY_KILL_SHARE:
            self.spawn(self._recovery_kill(), None)
        while self.world.journal.open():
            self.spawn(None, None)

    def _recovery_kill(self) -> str:
        """A point the recovery of the open migrations will reach, and which time to die there."""
        left = self.world.journal.open()
        back = [m for m in left if m.status == "rolling_back" or not m.reached("verified")]
        if back and (len(back) == len(left) or self.rng.random() < 0.5):
            return f"{next(self.rollback_points)}@{self.rng.randint(1, len(back))}"
        while True:
            point = next(self.after_verify_points)
            ahead = [m for m in left if m not in back and self._still_ahead(m.step, point)]
            if ahead:
                return f"{point}@{self.rng.randint(1, len(ahead))}"

    @staticmethod
    def _still_ahead(step: str, point: str) -> bool:
        """Whether a migration journaled at ``step`` still passes ``point`` when rolled on."""
        name = point.partition(":")[2]
        position = STEPS.index("released") if point.startswith("release:") else STEPS.index(name)
        return position > STEPS.index(step)

    def run_round(self, requests: list[MigrationRequest]) -> None:
        for _ in range(KILLS_PER_ROUND):
            remaining = self.unfinished(requests)
            if not remaining:
                break
            nth = self.rng.randint(1, max(1, remaining // 2))
            if self.spawn(f"{next(self.forward_points)}@{nth}", requests):
                self.recover()
        while self.unfinished(requests):
            assert not self.spawn(None, requests)

    # -- checking ----------------------------------------------------------------------------

    def check_sessions(self) -> None:
        """Every session once, writable, where its route points, with its last write."""
        assert self.world.journal.open() == []
        routes = self.world.journal.routes()
        copies: dict[str, list[str]] = {}
        for region in REGIONS:
            for user in self.world.sessions[region].list():
                copies.setdefault(user, []).append(region)
        assert {user: regions for user, regions in copies.items()} == {
            user: [routes[user].region] for user in self.users
        }
        for user in self.users:
            state = self.world.sessions[routes[user].region].get(user)
            assert not state.frozen, user
            assert state.checksum == digest(self.expected[user]), user

    def check_resources(self) -> None:
        """Each source released exactly once; the cloud holds exactly what the ledger says."""
        ledger, provider = self.world.ledger, self.world.manager.provider
        journal = self.world.journal
        done, rolled = journal.migrations({"done"}), journal.migrations({"rolled_back"})
        sources = [m.source_reservation_id for m in done]
        assert None not in sources and len(set(sources)) == len(sources)
        cold_rolled = [m.target_reservation_id for m in rolled if m.cold]

        closes = Counter((e.reservation_id, e.to_state) for e in ledger.journal())
        assert max(n for (_, state), n in closes.items() if state == "released") == 1
        for reservation_id in [*sources, *(r for r in cold_rolled if r)]:
            assert ledger.get(reservation_id).state == "released"
            assert closes[(reservation_id, "released")] == 1
            assert closes[(reservation_id, "releasing")] == 1

        inventory = provider.inventory()
        live = Counter(r.reservation_id for r in inventory)
        with provider.engine.begin() as conn:
            released_rows = dict(
                conn.execute(
                    select(local_resources.c.reservation_id, func.count())
                    .where(local_resources.c.released_at.is_not(None))
                    .group_by(local_resources.c.reservation_id)
                ).all()
            )
        for reservation_id in sources:
            assert live[reservation_id] == 0
            assert released_rows[reservation_id] == 3

        routes = journal.routes()
        active = ledger.reservations({"active"})
        assert sorted(r.user_id for r in active) == sorted(self.users)
        for reservation in active:
            assert reservation.region == routes[reservation.user_id].region
            assert live[reservation.reservation_id] == 3

        unfinished = ledger.reservations(LIVE | CLOSING | {"failed"})
        recorded = ledger.recorded_kinds([r.reservation_id for r in unfinished])
        drift = find_drift(inventory, unfinished, recorded)
        assert (drift.orphans, drift.missing, drift.closing) == ({}, [], [])


@pytest.mark.slow
def test_killing_the_migrating_process_at_every_step_loses_nothing(isolated_home: Path) -> None:
    harness = Harness(isolated_home, seed=20260105)
    harness.seat_everyone()
    for number in range(1, ROUNDS + 1):
        harness.run_round(harness.prepare_round(number))
        harness.check_sessions()
    harness.check_resources()

    migrations = harness.world.journal.migrations()
    outcomes = Counter(m.status for m in migrations)
    assert len(migrations) == USERS * ROUNDS >= 1000
    assert set(outcomes) <= {"done", "rolled_back"} and outcomes["done"] > len(migrations) / 2
    assert set(harness.killed) == set(POINTS), set(POINTS) - set(harness.killed)
    assert sum(harness.killed.values()) >= 60
    harness.world.close()
