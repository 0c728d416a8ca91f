"""Seamless session migration: freeze → copy → verify → start → redirect → release.

:class:`MigrationExecutor` moves one user's session from the region they connect to into the
region the router chose, through the steps of ``serving.router.migration_journal``:

1. **prepare**: the target reservation must be warm. A switchover to a region with no warm
   reservation (the reactive path) first provisions one cold through the Pre-Allocation
   Manager and waits until it is ready; meanwhile the user keeps being served at the source.
2. **freeze** the source session (no write lands after it); its checksum, version and size are
   journaled. Copying takes ``state_copy_fixed_s + state_copy_s_per_mb * MB`` on the clock.
3. **copy** the state into the target's store, as a frozen copy.
4. **verify** the copy against the journaled checksum and version.
5. **start**: the manager scales the target reservation to its full allocation (``activate``).
6. **redirect**: the user's route flips to the target, in the transaction that journals it.
7. **release**: the target copy becomes writable, the source copy is deleted and the manager
   releases the source reservation.

Each effect is idempotent and journaled after it happens. A step that cannot be carried out
(no session, a refused cold start, a checksum mismatch, no capacity to scale up) rolls the
migration back: the target copy is deleted, the source unfrozen, a reservation cold-provisioned
for this migration released. A killed executor calls :meth:`MigrationExecutor.recover` on
restart: unfinished migrations that had not passed ``verified`` are rolled back, the others
rolled forward. At every moment the user's session is writable in at most one place, and that
place is where the route points.

Time is never read here: every call takes ``now``, and a step that has to wait (a cold boot,
the copy) leaves ``due_at`` for the caller's clock, so simulated time drives it as well.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core.settings import RouterSettings, Settings
from serving.provisioning.clock import Clock, system_clock
from serving.provisioning.ledger import Reservation, idempotency_key
from serving.provisioning.manager import PreAllocationManager
from serving.provisioning.plan_rows import PreallocationRow
from serving.provisioning.provider import ProviderError, ResourceSpec
from serving.provisioning.states import IllegalTransitionError
from serving.router.migration_faults import FaultPoints
from serving.router.migration_journal import (
    STEPS,
    Migration,
    MigrationJournal,
    NewMigration,
    Step,
    migration_key,
)
from serving.sessions.state import SessionError, SessionNotFoundError, checksum_of
from serving.sessions.store import SessionStores, open_session_stores

BYTES_PER_MB = 1_000_000
WaitUntil = Callable[[datetime], None]
"""Blocks until the given moment of the caller's clock (sleeps, or moves simulated time)."""


@dataclass(frozen=True)
class MigrationRequest:
    """Move ``user_id``'s session from ``from_region`` to ``to_region`` (one intent)."""

    user_id: str
    intent_id: str
    from_region: str
    to_region: str
    spec: ResourceSpec


class MigrationFailedError(Exception):
    """A step cannot be carried out; the migration is rolled back (always before redirect)."""


@dataclass
class RecoveryReport:
    """What :meth:`MigrationExecutor.recover` did with the migrations it found unfinished."""

    rolled_back: list[str] = field(default_factory=list)
    rolled_forward: list[str] = field(default_factory=list)


def copy_seconds(size_bytes: int, router: RouterSettings) -> float:
    """How long copying ``size_bytes`` of session state between regions takes."""
    return router.state_copy_fixed_s + router.state_copy_s_per_mb * size_bytes / BYTES_PER_MB


def sleep_until(moment: datetime) -> None:
    """Wait on the wall clock until ``moment`` (production's :data:`WaitUntil`)."""
    time.sleep(max(0.0, (moment - system_clock()).total_seconds()))


class MigrationExecutor:
    """Carries out, journals and recovers session migrations."""

    def __init__(
        self,
        journal: MigrationJournal,
        manager: PreAllocationManager,
        sessions: SessionStores,
        settings: Settings,
        faults: Callable[[str], None] | None = None,
    ) -> None:
        self.journal = journal
        self.manager = manager
        self.sessions = sessions
        self.settings = settings
        self.fault = faults if faults is not None else FaultPoints.from_environment()
        self._steps: dict[Step, Callable[[Migration, datetime], Migration]] = {
            "prepared": self._prepare,
            "frozen": self._freeze,
            "copied": self._copy,
            "verified": self._verify,
            "started": self._start,
            "redirected": self._redirect,
            "released": self._release,
        }

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        clock: Clock = system_clock,
        faults: Callable[[str], None] | None = None,
    ) -> MigrationExecutor:
        """The configured journal, manager (ledger and provider) and session stores."""
        return cls(
            MigrationJournal.from_settings(settings),
            PreAllocationManager.from_settings(settings, clock),
            open_session_stores(settings),
            settings,
            faults,
        )

    def close(self) -> None:
        """Close every connection the executor opened."""
        self.sessions.close()
        self.journal.dispose()
        self.manager.ledger.dispose()
        dispose = getattr(self.manager.provider, "dispose", None)
        if dispose is not None:
            dispose()

    # -- driving -----------------------------------------------------------------------------

    def begin(self, request: MigrationRequest, now: datetime) -> Migration:
        """Journal a migration (idempotent on user + intent) with the reservations it will use.

        The source reservation is the user's active one at ``from_region`` (none when they are
        served from capacity the ledger does not hold); the target is their warm (or booting)
        one at ``to_region``, and when there is none the migration provisions cold.
        """
        if request.from_region == request.to_region:
            raise ValueError(f"{request.intent_id}: already at {request.to_region}")
        existing = self.journal.find(migration_key(request.user_id, request.intent_id))
        if existing is not None:
            return existing
        source = self._source_reservation(request)
        target = self._warm_target(request, now)
        return self.journal.begin(
            NewMigration(
                user_id=request.user_id,
                intent_id=request.intent_id,
                from_region=request.from_region,
                to_region=request.to_region,
                spec=request.spec,
                source_reservation_id=source.reservation_id if source else None,
                target_reservation_id=target.reservation_id if target else None,
                cold=target is None,
            ),
            now,
        )

    def advance(self, migration_id: str, now: datetime) -> Migration:
        """Carry a migration as far as it can go at ``now``.

        Returns it finished (done, rolled back, refused) or waiting (``due_at`` after ``now``).
        """
        return self._advance(self.journal.get(migration_id), now)

    def _advance(self, migration: Migration, now: datetime) -> Migration:
        """:meth:`advance` from the journal row the caller holds (a stale one fails safe: the
        journal's compare-and-set refuses it)."""
        while not migration.finished:
            if migration.status == "rolling_back":
                return self._roll_back(migration, now, migration.reason)
            if migration.due_at is not None and migration.due_at > now:
                return migration
            step = STEPS[STEPS.index(migration.step) + 1]
            try:
                migration = self._steps[step](migration, now)
            except MigrationFailedError as failure:
                return self._roll_back(migration, now, f"{step} failed: {failure}")
        return migration

    def run(
        self, requests: Iterable[MigrationRequest], clock: Clock, wait_until: WaitUntil
    ) -> list[Migration]:
        """Begin and finish migrations together, waiting on ``clock`` whenever all of them wait.

        ``wait_until`` is :func:`sleep_until` on the wall clock, or the ``set`` of a
        ``ManualClock`` when time is simulated. At most one request per user: a user has one
        open migration at a time (MigrationBusyError).
        """
        return self._finish(
            [self.begin(request, clock()) for request in requests], clock, wait_until
        )

    def finish(
        self, migration_ids: Iterable[str], clock: Clock, wait_until: WaitUntil
    ) -> list[Migration]:
        """Advance the given migrations until every one of them is finished."""
        return self._finish([self.journal.get(mid) for mid in migration_ids], clock, wait_until)

    def _finish(
        self, migrations: list[Migration], clock: Clock, wait_until: WaitUntil
    ) -> list[Migration]:
        current = {m.migration_id: m for m in migrations}
        while True:
            waiting = [m for m in current.values() if not m.finished]
            if not waiting:
                return list(current.values())
            for migration in waiting:
                current[migration.migration_id] = self._advance(migration, clock())
            due = [m.due_at for m in current.values() if not m.finished and m.due_at]
            if due and min(due) > clock():  # every open one waits: until the first is due
                wait_until(min(due))

    def recover(self, now: datetime) -> RecoveryReport:
        """Finish every migration a killed executor left open: back before verify, else on."""
        report = RecoveryReport()
        for migration in self.journal.open():
            if migration.status == "rolling_back" or not migration.reached("verified"):
                reason = migration.reason
                if migration.status == "running":
                    reason = f"interrupted at {migration.step}, before verify: rolled back"
                self._roll_back(migration, now, reason)
                report.rolled_back.append(migration.migration_id)
            else:
                self._advance(migration, now)
                report.rolled_forward.append(migration.migration_id)
        return report

    # -- the steps ---------------------------------------------------------------------------

    def _prepare(self, migration: Migration, now: datetime) -> Migration:
        """The target reservation is ready; cold-provision it first on the reactive path.

        Ready: warm, or booted by ``now`` (``activate`` marks it warm before scaling it).
        """
        self.fault("before:prepared")
        if migration.target_reservation_id is None:
            reservation = self._provision_cold(migration, now)
        else:
            reservation = self.manager.ledger.get(migration.target_reservation_id)
        self.fault("after:prepared")
        target = reservation.reservation_id
        booting = reservation.state == "provisioning" and reservation.ready_at is not None
        if reservation.state == "warm" or (booting and reservation.ready_at <= now):
            return self.journal.record(
                migration, "prepared", now,
                f"target reservation {target} ready in {migration.to_region}",
                target_reservation_id=target,
            )  # fmt: skip
        if booting:
            return self.journal.wait(
                migration, reservation.ready_at, now,
                f"waiting for target reservation {target} to boot "
                f"(ready at {reservation.ready_at.isoformat()})",
                target_reservation_id=target,
            )  # fmt: skip
        raise MigrationFailedError(
            f"target reservation {target} in {migration.to_region} is {reservation.state}: "
            f"{reservation.reason}"
        )

    def _provision_cold(self, migration: Migration, now: datetime) -> Reservation:
        """Request (or find again) the reservation this migration provisions at its target."""
        ttl = timedelta(hours=self.settings.provisioning.ttl_hours)
        row = PreallocationRow(
            user_id=migration.user_id,
            region=migration.to_region,
            window_start=migration.created_at,
            window_end=migration.created_at + ttl,
            spec=migration.spec,
        )
        outcome = self.manager.request(migration.migration_id, row, now)
        if outcome.reservation_id is None or outcome.outcome not in {"created", "existing"}:
            raise MigrationFailedError(
                f"cold provisioning in {migration.to_region}: {outcome.outcome}: {outcome.reason}"
            )
        return self.manager.ledger.get(outcome.reservation_id)

    def _freeze(self, migration: Migration, now: datetime) -> Migration:
        """Freeze the source session and journal what the copy must reproduce."""
        self.fault("before:frozen")
        try:
            state = self.sessions[migration.from_region].freeze(migration.user_id)
        except SessionNotFoundError as error:
            raise MigrationFailedError(str(error)) from None
        self.fault("after:frozen")
        delay = copy_seconds(state.size_bytes, self.settings.router)
        return self.journal.record(
            migration, "frozen", now,
            f"froze version {state.version} ({state.size_bytes} bytes) in "
            f"{migration.from_region}; the copy takes {delay:.3f} s",
            checksum=state.checksum, version=state.version, size_bytes=state.size_bytes,
            due_at=now + timedelta(seconds=delay),
        )  # fmt: skip

    def _copy(self, migration: Migration, now: datetime) -> Migration:
        """Write the frozen state into the target's store, frozen."""
        self.fault("before:copied")
        state = self.sessions[migration.from_region].get(migration.user_id)
        if state is None or not state.frozen or state.version != migration.version:
            raise MigrationFailedError(
                f"the frozen source session in {migration.from_region} changed or vanished"
            )
        try:
            self.sessions[migration.to_region].restore(state)
        except SessionError as error:
            raise MigrationFailedError(str(error)) from None
        self.fault("after:copied")
        return self.journal.record(
            migration, "copied", now, f"copied version {state.version} to {migration.to_region}"
        )

    def _verify(self, migration: Migration, now: datetime) -> Migration:
        """Check the target copy against the checksum and version journaled at the freeze."""
        self.fault("before:verified")
        copy = self.sessions[migration.to_region].get(migration.user_id)
        found = checksum_of(copy.data) if copy else None
        if copy is None or not copy.frozen or found != migration.checksum:
            raise MigrationFailedError(
                f"copy in {migration.to_region} does not match: checksum {found}, expected "
                f"{migration.checksum}"
            )
        if copy.version != migration.version:
            raise MigrationFailedError(
                f"copy in {migration.to_region} is version {copy.version}, expected "
                f"{migration.version}"
            )
        self.fault("after:verified")
        return self.journal.record(migration, "verified", now, f"checksum {found[:12]}… verified")

    def _start(self, migration: Migration, now: datetime) -> Migration:
        """Scale the target reservation to its full allocation (the manager's ``activate``)."""
        self.fault("before:started")
        target = migration.target_reservation_id
        assert target is not None, "a prepared migration has its target reservation"
        try:
            reservation = self.manager.activate(target, now)
        except (ProviderError, IllegalTransitionError, KeyError) as error:
            raise MigrationFailedError(f"activating {target}: {error}") from None
        self.fault("after:started")
        ready = reservation.ready_at.isoformat() if reservation.ready_at else "now"
        return self.journal.record(
            migration, "started", now, f"target reservation {target} active (ready {ready})"
        )

    def _redirect(self, migration: Migration, now: datetime) -> Migration:
        """Flip the user's route to the target (atomic with the journal record)."""
        self.fault("before:redirected")
        return self.journal.redirect(migration, now)

    def _release(self, migration: Migration, now: datetime) -> Migration:
        """Open the target copy, delete the source copy, release the source reservation."""
        self.fault("before:released")
        self.sessions[migration.to_region].unfreeze(migration.user_id)
        self.fault("release:unfrozen")
        self.sessions[migration.from_region].delete(
            migration.user_id, frozen_only=True, checksum=migration.checksum
        )
        self.fault("release:deleted")
        source = migration.source_reservation_id
        released = 0
        if source is not None:
            released = self.manager.release(
                source, now, f"migration {migration.migration_id}: moved to {migration.to_region}"
            )
        self.fault("after:released")
        what = f"source reservation {source} released" if source else "no source reservation"
        if source is not None and not released:
            what = f"source reservation {source} was already released"
        return self.journal.record(
            migration, "released", now,
            f"done: serving from {migration.to_region}; source copy deleted; {what}",
        )  # fmt: skip

    # -- rolling back ------------------------------------------------------------------------

    def _roll_back(self, migration: Migration, now: datetime, reason: str) -> Migration:
        """Undo a migration that has not redirected; every effect here is idempotent too."""
        if migration.status == "running":
            migration = self.journal.start_rollback(migration, now, reason)
        self.fault("rollback:begun")
        user = migration.user_id
        # Only a migration makes frozen copies, and the user has one open at a time: any
        # frozen copy at the target is this one's (a corrupted one included).
        self.sessions[migration.to_region].delete(user, frozen_only=True)
        self.fault("rollback:copy_deleted")
        self.sessions[migration.from_region].unfreeze(user)
        self.fault("rollback:unfrozen")
        released = ""
        if migration.cold:
            cold = self._cold_reservation(migration)
            if cold is not None:
                self.manager.release(
                    cold.reservation_id, now, f"migration {migration.migration_id} rolled back"
                )
                released = f"; released cold reservation {cold.reservation_id}"
        self.fault("rollback:released")
        return self.journal.finish_rollback(
            migration, now, f"rolled back: source unfrozen in {migration.from_region}{released}"
        )

    def _cold_reservation(self, migration: Migration) -> Reservation | None:
        """The reservation provisioned for this migration, even if the journal missed its id."""
        if migration.target_reservation_id is not None:
            return self.manager.ledger.get(migration.target_reservation_id)
        key = idempotency_key(migration.user_id, migration.to_region, migration.created_at)
        return self.manager.ledger.by_key(key)

    # -- choosing reservations ---------------------------------------------------------------

    def _source_reservation(self, request: MigrationRequest) -> Reservation | None:
        active = self.manager.ledger.reservations(
            {"active"}, user_id=request.user_id, region=request.from_region
        )
        return active[-1] if active else None

    def _warm_target(self, request: MigrationRequest, now: datetime) -> Reservation | None:
        """The user's warm (else booting) reservation at the target that has not expired."""
        held = [
            r
            for r in self.manager.ledger.reservations(
                {"warm", "provisioning"}, user_id=request.user_id, region=request.to_region
            )
            if r.expires_at > now and (r.state == "warm" or r.ready_at is not None)
        ]
        held.sort(key=lambda r: (r.state != "warm", abs((r.window_start - now).total_seconds())))
        return held[0] if held else None
