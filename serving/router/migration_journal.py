"""The migration journal: one row per session migration, the steps it took, and the routes.

A migration moves one user's session from ``from_region`` to ``to_region`` through the steps
of :data:`STEPS`. Its row (idempotency key: user + switchover intent) holds the last step
*completed*; every step's effect is done first and recorded afterwards, so a process killed in
between re-does an idempotent effect and never skips one. Every change is also appended to
``migration_journal`` with its time and detail.

The journal also keeps ``session_routes``: the region each user connects to. The route flips
to the target in the very transaction that records the ``redirected`` step, so "where the user
is served" and "how far the migration got" can never disagree.

Statuses: ``running`` → ``done`` (after ``released``), or ``running`` → ``rolling_back`` →
``rolled_back`` (allowed only before ``redirected``); ``refused`` for an intent that could not
start (the user was not where it said). At most one open (running or rolling back) migration
per user, enforced by a partial unique index.

SQLite under the serving folder by default (``router.migration_journal_url`` for PostgreSQL),
with the write-locked transactions of ``serving.provisioning.db``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from core.settings import Settings
from serving.provisioning.db import (
    UTCDateTime,
    make_engine,
    spec_columns,
    spec_of,
    spec_values,
    sqlite_url,
)
from serving.provisioning.provider import ResourceSpec

Step = Literal[
    "planned", "prepared", "frozen", "copied", "verified", "started", "redirected", "released"
]
STEPS: tuple[Step, ...] = (
    "planned",  # recorded: the migration exists; nothing done yet
    "prepared",  # the target reservation is warm (cold-provisioned first when there was none)
    "frozen",  # the source session is read-only; its checksum and size are recorded
    "copied",  # a frozen copy is at the target
    "verified",  # the copy's checksum matches: from here on, recovery rolls forward
    "started",  # the target reservation is scaled to its full allocation (activate)
    "redirected",  # the user's route points at the target (same transaction as this step)
    "released",  # target unfrozen, source copy deleted, source reservation released
)
Status = Literal["running", "rolling_back", "done", "rolled_back", "refused"]
OPEN: frozenset[str] = frozenset({"running", "rolling_back"})

metadata = MetaData()

migrations = Table(
    "migrations",
    metadata,
    Column("migration_id", String(600), primary_key=True),
    Column("user_id", String(255), nullable=False),
    Column("intent_id", String(300), nullable=False),
    Column("from_region", String(64), nullable=False),
    Column("to_region", String(64), nullable=False),
    *spec_columns(),
    Column("source_reservation_id", String(64), nullable=True),
    Column("target_reservation_id", String(64), nullable=True),
    Column("cold", Boolean, nullable=False),
    Column("step", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("checksum", String(64), nullable=True),
    Column("version", Integer, nullable=True),
    Column("size_bytes", Integer, nullable=True),
    Column("due_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_migrations_status", "status"),
)
Index(  # one open migration per user
    "ux_migrations_open_user",
    migrations.c.user_id,
    unique=True,
    sqlite_where=migrations.c.status.in_(sorted(OPEN)),
    postgresql_where=migrations.c.status.in_(sorted(OPEN)),
)

journal_entries = Table(
    "migration_journal",
    metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column("migration_id", String(600), ForeignKey("migrations.migration_id"), nullable=False),
    Column("step", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_migration_journal_migration", "migration_id", "entry_id"),
)

session_routes = Table(
    "session_routes",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("region", String(64), nullable=False),
    Column("migration_id", String(600), nullable=True),
    Column("since", UTCDateTime, nullable=False),
)


def migration_key(user_id: str, intent_id: str) -> str:
    """The idempotency key of a migration: one user, one switchover intent."""
    return f"{user_id}|{intent_id}"


@dataclass(frozen=True)
class NewMigration:
    """A migration about to be journaled, with the reservations it will use."""

    user_id: str
    intent_id: str
    from_region: str
    to_region: str
    spec: ResourceSpec
    source_reservation_id: str | None
    target_reservation_id: str | None
    cold: bool


@dataclass(frozen=True)
class Migration:
    """One row of the journal."""

    migration_id: str
    user_id: str
    intent_id: str
    from_region: str
    to_region: str
    spec: ResourceSpec
    source_reservation_id: str | None
    target_reservation_id: str | None
    cold: bool
    step: Step
    status: Status
    checksum: str | None
    version: int | None
    size_bytes: int | None
    due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    reason: str

    @property
    def finished(self) -> bool:
        """Done, rolled back or refused: nothing more will happen to it."""
        return self.status not in OPEN

    def reached(self, step: Step) -> bool:
        """Whether ``step`` is completed."""
        return STEPS.index(self.step) >= STEPS.index(step)


@dataclass(frozen=True)
class JournalEntry:
    """One recorded change of a migration."""

    entry_id: int
    migration_id: str
    step: Step
    status: Status
    at: datetime
    detail: str


@dataclass(frozen=True)
class SessionRoute:
    """Where one user connects, and the migration that put them there (if any)."""

    user_id: str
    region: str
    migration_id: str | None
    since: datetime


class MigrationBusyError(RuntimeError):
    """The user already has an open migration; a new one must wait for it."""


class StepConflictError(RuntimeError):
    """The migration is no longer where the caller left it (another executor moved it)."""


class MigrationJournal:
    """Migrations, their journal and the session routes, in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> MigrationJournal:
        """The configured journal: ``router.migration_journal_url`` or SQLite under serving_dir."""
        url = settings.router.migration_journal_url or sqlite_url(
            settings.serving_dir / "migrations.sqlite"
        )
        return cls(make_engine(url, settings.provisioning.lock_timeout_seconds))

    def dispose(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    # -- starting ----------------------------------------------------------------------------

    def begin(self, new: NewMigration, now: datetime) -> Migration:
        """Journal ``new`` as ``planned``, or return the migration its key already names.

        The user's route is set to ``from_region`` when the journal has none yet. A user who
        connects elsewhere gets a ``refused`` migration saying so; a user with another open
        migration raises MigrationBusyError and nothing is written.
        """
        migration_id = migration_key(new.user_id, new.intent_id)
        with self.engine.begin() as conn:
            existing = self._find(conn, migration_id)
            if existing is not None:
                return existing
            route = self._route(conn, new.user_id)
            status: Status = "running"
            reason = f"planned: {new.from_region} -> {new.to_region}" + (
                " (no warm reservation there: cold start)" if new.cold else ""
            )
            if route is None:
                conn.execute(
                    insert(session_routes).values(
                        user_id=new.user_id, region=new.from_region, migration_id=None, since=now
                    )
                )
            elif route.region != new.from_region:
                status = "refused"
                reason = f"refused: {new.user_id} connects to {route.region}, not {new.from_region}"
            if status == "running":
                busy = self._open_for(conn, new.user_id)
                if busy is not None:
                    raise MigrationBusyError(
                        f"{new.user_id} has an open migration {busy.migration_id} "
                        f"({busy.status} at {busy.step})"
                    )
            conn.execute(
                insert(migrations).values(
                    migration_id=migration_id,
                    user_id=new.user_id,
                    intent_id=new.intent_id,
                    from_region=new.from_region,
                    to_region=new.to_region,
                    **spec_values(new.spec),
                    source_reservation_id=new.source_reservation_id,
                    target_reservation_id=new.target_reservation_id,
                    cold=new.cold,
                    step="planned",
                    status=status,
                    created_at=now,
                    updated_at=now,
                    reason=reason,
                )
            )
            _append(conn, migration_id, "planned", status, now, reason)
            return self._get(conn, migration_id)

    # -- moving on ---------------------------------------------------------------------------

    def record(
        self, migration: Migration, step: Step, now: datetime, detail: str, **fields: Any
    ) -> Migration:
        """Record that ``step`` (the one after ``migration.step``) is done; clears ``due_at``.

        ``released`` also marks the migration ``done``. Raises StepConflictError when the row
        is not running at ``migration.step`` any more.
        """
        if STEPS.index(step) != STEPS.index(migration.step) + 1:
            raise ValueError(f"{migration.migration_id}: {migration.step} -> {step} skips a step")
        if step == "redirected":
            raise ValueError("the redirect flips the route: use redirect()")
        status: Status = "done" if step == "released" else "running"
        with self.engine.begin() as conn:
            return self._move(
                conn,
                migration,
                {"running"},
                now,
                detail,
                step=step,
                status=status,
                reason=detail,
                due_at=fields.pop("due_at", None),
                **fields,
            )

    def wait(
        self, migration: Migration, until: datetime, now: datetime, detail: str, **fields: Any
    ) -> Migration:
        """Note that the next step cannot happen before ``until`` (``due_at``)."""
        with self.engine.begin() as conn:
            return self._move(
                conn, migration, {"running"}, now, detail, reason=detail, due_at=until, **fields
            )

    def redirect(self, migration: Migration, now: datetime) -> Migration:
        """Record ``redirected`` and point the user's route at the target, in one transaction."""
        if migration.step != "started":
            raise ValueError(f"{migration.migration_id}: redirect after {migration.step}")
        detail = f"redirected: {migration.user_id} now connects to {migration.to_region}"
        with self.engine.begin() as conn:
            changed = self._move(
                conn, migration, {"running"}, now, detail,
                step="redirected", reason=detail, due_at=None,
            )  # fmt: skip
            flipped = conn.execute(
                update(session_routes)
                .where(
                    session_routes.c.user_id == migration.user_id,
                    session_routes.c.region == migration.from_region,
                )
                .values(region=migration.to_region, migration_id=migration.migration_id, since=now)
            )
            if flipped.rowcount != 1:
                raise StepConflictError(
                    f"{migration.user_id}'s route is not at {migration.from_region} any more"
                )
            return changed

    def start_rollback(self, migration: Migration, now: datetime, reason: str) -> Migration:
        """Mark a running migration ``rolling_back`` (only before its redirect)."""
        if migration.reached("redirected"):
            raise ValueError(f"{migration.migration_id}: cannot roll back after the redirect")
        with self.engine.begin() as conn:
            return self._move(
                conn, migration, {"running"}, now, f"rolling back: {reason}",
                status="rolling_back", reason=reason, due_at=None,
            )  # fmt: skip

    def finish_rollback(self, migration: Migration, now: datetime, detail: str) -> Migration:
        """Mark a rolling-back migration ``rolled_back`` (its effects are undone)."""
        with self.engine.begin() as conn:
            return self._move(
                conn, migration, {"rolling_back"}, now, detail,
                status="rolled_back", reason=f"rolled back: {migration.reason}",
            )  # fmt: skip

    def note(self, migration: Migration, now: datetime, detail: str) -> None:
        """Journal something that happened without moving the migration (e.g. a retry)."""
        with self.engine.begin() as conn:
            _append(conn, migration.migration_id, migration.step, migration.status, now, detail)

    # -- reading -----------------------------------------------------------------------------

    def get(self, migration_id: str) -> Migration:
        """The migration with this id; KeyError if there is none."""
        with self.engine.begin() as conn:
            return self._get(conn, migration_id)

    def find(self, migration_id: str) -> Migration | None:
        """The migration with this id, or None."""
        with self.engine.begin() as conn:
            return self._find(conn, migration_id)

    def migrations(self, statuses: Collection[Status] | None = None) -> list[Migration]:
        """Migrations, oldest first, optionally only in some statuses."""
        query = select(migrations).order_by(migrations.c.created_at, migrations.c.migration_id)
        if statuses is not None:
            query = query.where(migrations.c.status.in_(list(statuses)))
        with self.engine.begin() as conn:
            return [_to_migration(row) for row in conn.execute(query)]

    def open(self) -> list[Migration]:
        """Migrations not finished (running or rolling back), oldest first."""
        return self.migrations(OPEN)  # type: ignore[arg-type]

    def entries(self, migration_id: str | None = None) -> list[JournalEntry]:
        """Journal entries, oldest first; of one migration when an id is given."""
        query = select(journal_entries).order_by(journal_entries.c.entry_id)
        if migration_id is not None:
            query = query.where(journal_entries.c.migration_id == migration_id)
        with self.engine.begin() as conn:
            return [
                JournalEntry(r.entry_id, r.migration_id, r.step, r.status, r.at, r.detail)
                for r in conn.execute(query)
            ]

    def route(self, user_id: str) -> SessionRoute | None:
        """Where ``user_id`` connects, if the journal knows."""
        with self.engine.begin() as conn:
            return self._route(conn, user_id)

    def routes(self, user_ids: Collection[str] | None = None) -> dict[str, SessionRoute]:
        """Every known route by user, or only those of ``user_ids``."""
        query = select(session_routes)
        if user_ids is not None:
            query = query.where(session_routes.c.user_id.in_(list(user_ids)))
        with self.engine.begin() as conn:
            return {
                row.user_id: SessionRoute(row.user_id, row.region, row.migration_id, row.since)
                for row in conn.execute(query)
            }

    def place(self, user_id: str, region: str, now: datetime) -> SessionRoute:
        """Record where a user connects when first seen; an existing route is kept."""
        with self.engine.begin() as conn:
            route = self._route(conn, user_id)
            if route is None:
                conn.execute(
                    insert(session_routes).values(
                        user_id=user_id, region=region, migration_id=None, since=now
                    )
                )
                route = SessionRoute(user_id, region, None, now)
            return route

    # -- internals ---------------------------------------------------------------------------

    def _move(
        self,
        conn: Connection,
        migration: Migration,
        statuses: Collection[str],
        now: datetime,
        detail: str,
        **values: Any,
    ) -> Migration:
        """Compare-and-set: change the row only if it is still at the caller's step and status."""
        moved = conn.execute(
            update(migrations)
            .where(
                migrations.c.migration_id == migration.migration_id,
                migrations.c.step == migration.step,
                migrations.c.status == migration.status,
                migrations.c.status.in_(list(statuses)),
            )
            .values(updated_at=now, **values)
            .returning(*migrations.c)
        ).first()
        if moved is None:
            current = self._find(conn, migration.migration_id)
            where = f"{current.status} at {current.step}" if current else "missing"
            raise StepConflictError(
                f"{migration.migration_id}: expected {migration.status} at {migration.step}, "
                f"found {where}"
            )
        changed = _to_migration(moved)
        _append(conn, changed.migration_id, changed.step, changed.status, now, detail)
        return changed

    @staticmethod
    def _find(conn: Connection, migration_id: str) -> Migration | None:
        row = conn.execute(
            select(migrations).where(migrations.c.migration_id == migration_id)
        ).first()
        return _to_migration(row) if row is not None else None

    def _get(self, conn: Connection, migration_id: str) -> Migration:
        found = self._find(conn, migration_id)
        if found is None:
            raise KeyError(f"no migration {migration_id!r} in the journal")
        return found

    @staticmethod
    def _open_for(conn: Connection, user_id: str) -> Migration | None:
        row = conn.execute(
            select(migrations).where(
                migrations.c.user_id == user_id, migrations.c.status.in_(sorted(OPEN))
            )
        ).first()
        return _to_migration(row) if row is not None else None

    @staticmethod
    def _route(conn: Connection, user_id: str) -> SessionRoute | None:
        row = conn.execute(
            select(session_routes).where(session_routes.c.user_id == user_id)
        ).first()
        if row is None:
            return None
        return SessionRoute(row.user_id, row.region, row.migration_id, row.since)


def _append(
    conn: Connection, migration_id: str, step: str, status: str, at: datetime, detail: str
) -> None:
    conn.execute(
        insert(journal_entries).values(
            migration_id=migration_id, step=step, status=status, at=at, detail=detail
        )
    )


def _to_migration(row: Any) -> Migration:
    return Migration(
        migration_id=row.migration_id,
        user_id=row.user_id,
        intent_id=row.intent_id,
        from_region=row.from_region,
        to_region=row.to_region,
        spec=spec_of(row),
        source_reservation_id=row.source_reservation_id,
        target_reservation_id=row.target_reservation_id,
        cold=row.cold,
        step=row.step,
        status=row.status,
        checksum=row.checksum,
        version=row.version,
        size_bytes=row.size_bytes,
        due_at=row.due_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        reason=row.reason,
    )
