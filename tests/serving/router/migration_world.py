"""A small world for the migration tests: users with sessions and reservations in regions.

Everything is real: the SQLite ledger, the local cloud (boot delays on a ManualClock), the
session stores and the migration journal of one PREWARM_HOME.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.settings import Settings
from serving.provisioning.clock import ManualClock
from serving.provisioning.ledger import Reservation
from serving.provisioning.plan_rows import PreallocationRow
from serving.provisioning.provider import ResourceSpec
from serving.router.migration import MigrationExecutor, MigrationRequest

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
REGIONS = ("aws-us-east-1", "aws-us-west-2", "aws-eu-west-1", "aws-ap-southeast-1")
SPEC = ResourceSpec(cpu_cores=1.0, ram_gb=2.0, storage_iops=100.0, network_mbps=10.0)


def world_settings(home: Path, **router: object) -> Settings:
    """Settings on ``home`` with budgets and TTLs that never get in a test's way."""
    settings = Settings(home=home)
    provisioning = settings.provisioning.model_copy(
        update={"budget_usd_per_hour": 1e9, "region_budget_usd_per_hour": 1e9, "ttl_hours": 1e5}
    )
    return settings.model_copy(
        update={
            "provisioning": provisioning,
            "router": settings.router.model_copy(update=router),
        }
    )


def digest(data: bytes) -> str:
    """The checksum the stores use."""
    return hashlib.sha256(data).hexdigest()


class World:
    """An executor and the parts it drives, on a simulated clock."""

    def __init__(
        self,
        settings: Settings,
        clock: ManualClock,
        faults: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.executor = MigrationExecutor.from_settings(settings, clock, faults)
        self.manager = self.executor.manager
        self.ledger = self.manager.ledger
        self.journal = self.executor.journal
        self.sessions = self.executor.sessions

    def close(self) -> None:
        """Close every connection."""
        self.executor.close()

    def hold(self, user: str, region: str, spec: ResourceSpec = SPEC) -> Reservation:
        """Request a warm hold for ``user`` in ``region`` (booting until :meth:`boot`)."""
        now = self.clock()
        row = PreallocationRow(user, region, now, now + timedelta(hours=1e5), spec)
        outcome = self.manager.request(user, row, now)
        assert outcome.reservation_id is not None, outcome.reason
        return self.ledger.get(outcome.reservation_id)

    def boot(self) -> None:
        """Let every booting hold become warm (moves the clock past the cold boot)."""
        boot = self.settings.provisioning.cold_boot_seconds
        self.clock.set(self.clock() + timedelta(seconds=boot + 1))
        self.manager.promote_ready(self.clock())

    def seat(self, users: dict[str, str], data: dict[str, bytes]) -> dict[str, Reservation]:
        """Put each user in their region: a route, a session and an active reservation."""
        held = {user: self.hold(user, region) for user, region in users.items()}
        self.boot()
        for user, region in users.items():
            self.journal.place(user, region, self.clock())
            self.sessions[region].put(user, data[user])
            held[user] = self.manager.activate(held[user].reservation_id, self.clock())
        return held

    def request(self, user: str, intent: str, to_region: str) -> MigrationRequest:
        """A migration of ``user`` from where the journal says they are to ``to_region``."""
        route = self.journal.route(user)
        assert route is not None
        return MigrationRequest(user, intent, route.region, to_region, SPEC)

    def where(self, user: str) -> list[tuple[str, bool]]:
        """Every (region, frozen) copy of the user's session, across the world's regions."""
        copies = []
        for region in REGIONS:
            state = self.sessions[region].get(user)
            if state is not None:
                copies.append((region, state.frozen))
        return copies
