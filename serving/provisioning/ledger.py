"""The reservation ledger: what is held for whom, in which state, and how it got there.

One row per reservation (a user's compute, storage and network in one region for one plan
window), unique on its idempotency key, so re-running a plan can never hold the same thing
twice. Every state change is appended to a journal with its time and reason. The resources a
provider created for a reservation are recorded per kind, which is what the reconciler
compares with the provider's inventory.

SQLite under ``settings.serving_dir`` by default, PostgreSQL in production
(``settings.provisioning.ledger_url``). Admission (budget check plus insert) is serialised:
``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on a lock row on PostgreSQL, so the
warm-spend cap holds even when several processes provision at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    text,
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
from serving.provisioning.provider import ProviderResource, ResourceSpec
from serving.provisioning.states import (
    HOLDING,
    STATES,
    State,
    check_transition,
)

BUDGET_EPSILON_USD = 1e-9
"""Float slack when comparing summed prices with a cap."""

_SCHEMA_LOCK_KEY = 0x70726577  # any fixed 32-bit number: serialises schema creation on PostgreSQL

metadata = MetaData()

reservations = Table(
    "reservations",
    metadata,
    Column("reservation_id", String(64), primary_key=True),
    Column("idempotency_key", String(512), nullable=False, unique=True),
    Column("user_id", String(255), nullable=False),
    Column("region", String(64), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    *spec_columns(),
    Column("warm_fraction", Float, nullable=False),
    Column("warm_usd_per_hour", Float, nullable=False),
    Column("full_usd_per_hour", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ready_at", UTCDateTime, nullable=True),
    Column("reason", Text, nullable=False, default=""),
    CheckConstraint(
        "state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")", name="reservation_state"
    ),
    Index("ix_reservations_state_region", "state", "region"),
    Index("ix_reservations_user", "user_id"),
)

journal = Table(
    "reservation_journal",
    metadata,
    Column("entry_id", Integer, primary_key=True, autoincrement=True),
    Column(
        "reservation_id",
        String(64),
        ForeignKey("reservations.reservation_id"),
        nullable=False,
    ),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_journal_reservation", "reservation_id", "entry_id"),
)

reservation_resources = Table(
    "reservation_resources",
    metadata,
    Column(
        "reservation_id",
        String(64),
        ForeignKey("reservations.reservation_id"),
        primary_key=True,
    ),
    Column("kind", String(16), primary_key=True),
    Column("resource_id", String(128), nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)

locks = Table("ledger_locks", metadata, Column("name", String(32), primary_key=True))


def idempotency_key(user_id: str, region: str, window_start: datetime) -> str:
    """The key of a pre-allocation: one user, one region, one plan window (by its start)."""
    return f"{user_id}|{region}|{window_start.isoformat()}"


@dataclass(frozen=True)
class Reservation:
    """One row of the ledger."""

    reservation_id: str
    idempotency_key: str
    user_id: str
    region: str
    window_start: datetime
    window_end: datetime
    spec: ResourceSpec
    warm_fraction: float
    warm_usd_per_hour: float
    full_usd_per_hour: float
    state: State
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    ready_at: datetime | None
    reason: str

    @property
    def warm_spec(self) -> ResourceSpec:
        """What the reservation holds until it is used."""
        return self.spec.scaled(self.warm_fraction)

    @property
    def held_spec(self) -> ResourceSpec:
        """What the provider should hold now: the full allocation once active."""
        return self.spec if self.state == "active" else self.warm_spec


@dataclass(frozen=True)
class NewReservation:
    """A pre-allocation the manager asks the ledger to admit."""

    idempotency_key: str
    user_id: str
    region: str
    window_start: datetime
    window_end: datetime
    spec: ResourceSpec
    warm_fraction: float
    warm_usd_per_hour: float
    full_usd_per_hour: float
    expires_at: datetime


@dataclass(frozen=True)
class Budget:
    """Caps on the summed hourly price of warm holds: all regions, and each region."""

    global_usd_per_hour: float
    region_usd_per_hour: float


@dataclass(frozen=True)
class Admission:
    """What :meth:`Ledger.admit` did with one pre-allocation."""

    outcome: Literal["created", "retried", "existing", "over_budget"]
    reservation: Reservation | None
    reason: str


@dataclass(frozen=True)
class JournalEntry:
    """One state change (or, when ``from_state == to_state``, a repair) of a reservation."""

    entry_id: int
    reservation_id: str
    from_state: State | None
    to_state: State
    at: datetime
    reason: str


class Ledger:
    """Reservations, their journal and their recorded provider resources, in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._create_schema()

    @classmethod
    def from_url(cls, url: str, lock_timeout_seconds: float = 30.0) -> Ledger:
        """Open (creating the tables when needed) the ledger at a SQLAlchemy URL."""
        return cls(make_engine(url, lock_timeout_seconds))

    @classmethod
    def from_settings(cls, settings: Settings) -> Ledger:
        """The configured ledger: ``provisioning.ledger_url`` or SQLite under serving_dir."""
        config = settings.provisioning
        url = config.ledger_url or sqlite_url(settings.serving_dir / "ledger.sqlite")
        return cls.from_url(url, config.lock_timeout_seconds)

    def dispose(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    # -- admission ---------------------------------------------------------------------------

    def admit(self, new: NewReservation, budget: Budget, now: datetime) -> Admission:
        """Insert ``new`` as ``requested`` if its key is unseen and the budget allows it.

        A key already in the ledger is returned as ``existing``, except a ``failed`` one, which
        is retried in place (``retried``) when the budget allows. Budget check and insert run
        in one locked transaction.
        """
        with self.engine.begin() as conn:
            self._lock(conn, "budget")
            row = conn.execute(
                select(reservations)
                .where(reservations.c.idempotency_key == new.idempotency_key)
                .with_for_update()
            ).first()
            current = _to_reservation(row) if row is not None else None
            if current is not None and current.state != "failed":
                return Admission("existing", current, f"already {current.state}")
            refusal = self._over_budget(conn, new.region, new.warm_usd_per_hour, budget)
            if refusal:
                return Admission("over_budget", current, refusal)
            if current is not None:
                retried = self._move(
                    conn,
                    current,
                    "requested",
                    now,
                    "retry after failure: " + current.reason,
                    expires_at=new.expires_at,
                )
                return Admission("retried", retried, retried.reason)
            reservation_id = str(uuid.uuid4())
            conn.execute(
                insert(reservations).values(
                    reservation_id=reservation_id,
                    idempotency_key=new.idempotency_key,
                    user_id=new.user_id,
                    region=new.region,
                    window_start=new.window_start,
                    window_end=new.window_end,
                    **spec_values(new.spec),
                    warm_fraction=new.warm_fraction,
                    warm_usd_per_hour=new.warm_usd_per_hour,
                    full_usd_per_hour=new.full_usd_per_hour,
                    state="requested",
                    created_at=now,
                    updated_at=now,
                    expires_at=new.expires_at,
                    ready_at=None,
                    reason="planned pre-allocation",
                )
            )
            _journal(conn, reservation_id, None, "requested", now, "planned pre-allocation")
            return Admission("created", self._get(conn, reservation_id), "planned pre-allocation")

    def _over_budget(
        self, conn: Connection, region: str, price: float, budget: Budget
    ) -> str | None:
        """Why adding ``price`` to the warm spend would break a cap, or None if it fits."""
        spend = self._warm_spend(conn)
        in_region = spend.get(region, 0.0)
        total = sum(spend.values())
        if in_region + price > budget.region_usd_per_hour + BUDGET_EPSILON_USD:
            return (
                f"region {region} warm spend {in_region:.4f} + {price:.4f} USD/h would exceed "
                f"its cap {budget.region_usd_per_hour:.4f} USD/h"
            )
        if total + price > budget.global_usd_per_hour + BUDGET_EPSILON_USD:
            return (
                f"global warm spend {total:.4f} + {price:.4f} USD/h would exceed "
                f"the cap {budget.global_usd_per_hour:.4f} USD/h"
            )
        return None

    # -- state changes -----------------------------------------------------------------------

    def transition(
        self, reservation_id: str, target: State, now: datetime, reason: str, **updates: Any
    ) -> Reservation:
        """Move a reservation to ``target``; IllegalTransitionError if the life cycle forbids it."""
        with self.engine.begin() as conn:
            current = self._get(conn, reservation_id, for_update=True)
            return self._move(conn, current, target, now, reason, **updates)

    def try_transition(
        self,
        reservation_id: str,
        target: State,
        now: datetime,
        reason: str,
        from_states: Collection[State],
        **updates: Any,
    ) -> tuple[Reservation, bool]:
        """Move to ``target`` only if the reservation is in one of ``from_states``.

        Returns the reservation as it is afterwards and whether it moved; a reservation that
        another process already moved on is left alone (no error), which keeps concurrent
        provisioning, reconciling and releasing safe.
        """
        with self.engine.begin() as conn:
            current = self._get(conn, reservation_id, for_update=True)
            if current.state not in from_states:
                return current, False
            return self._move(conn, current, target, now, reason, **updates), True

    def note(self, reservation_id: str, now: datetime, reason: str, **updates: Any) -> Reservation:
        """Journal a repair that leaves the state as it is (``from_state == to_state``)."""
        with self.engine.begin() as conn:
            current = self._get(conn, reservation_id, for_update=True)
            conn.execute(
                update(reservations)
                .where(reservations.c.reservation_id == reservation_id)
                .values(updated_at=now, reason=reason, **updates)
            )
            _journal(conn, reservation_id, current.state, current.state, now, reason)
            return self._get(conn, reservation_id)

    def _move(
        self,
        conn: Connection,
        current: Reservation,
        target: State,
        now: datetime,
        reason: str,
        **updates: Any,
    ) -> Reservation:
        check_transition(current.reservation_id, current.state, target)
        conn.execute(
            update(reservations)
            .where(reservations.c.reservation_id == current.reservation_id)
            .values(state=target, updated_at=now, reason=reason, **updates)
        )
        _journal(conn, current.reservation_id, current.state, target, now, reason)
        return self._get(conn, current.reservation_id)

    # -- provider resources ------------------------------------------------------------------

    def record_resources(
        self, reservation_id: str, resources: Iterable[ProviderResource], now: datetime
    ) -> Reservation:
        """Remember which provider resources realise a reservation, and when they are ready."""
        resources = list(resources)
        ready = [r.ready_at for r in resources if r.ready_at is not None]
        with self.engine.begin() as conn:
            self._get(conn, reservation_id, for_update=True)
            conn.execute(
                reservation_resources.delete().where(
                    reservation_resources.c.reservation_id == reservation_id
                )
            )
            if resources:
                conn.execute(
                    insert(reservation_resources),
                    [
                        {
                            "reservation_id": reservation_id,
                            "kind": r.kind,
                            "resource_id": r.resource_id,
                            "recorded_at": now,
                        }
                        for r in resources
                    ],
                )
            conn.execute(
                update(reservations)
                .where(reservations.c.reservation_id == reservation_id)
                .values(ready_at=max(ready) if ready else now, updated_at=now)
            )
            return self._get(conn, reservation_id)

    def recorded_kinds(self, reservation_ids: Collection[str] | None = None) -> dict[str, set[str]]:
        """Kinds of provider resource recorded per reservation (only those that have any)."""
        query = select(reservation_resources.c.reservation_id, reservation_resources.c.kind)
        if reservation_ids is not None:
            query = query.where(reservation_resources.c.reservation_id.in_(list(reservation_ids)))
        kinds: dict[str, set[str]] = {}
        with self.engine.begin() as conn:
            for reservation_id, kind in conn.execute(query):
                kinds.setdefault(reservation_id, set()).add(kind)
        return kinds

    # -- reading -----------------------------------------------------------------------------

    def get(self, reservation_id: str) -> Reservation:
        """The reservation with this id; KeyError if there is none."""
        with self.engine.begin() as conn:
            return self._get(conn, reservation_id)

    def by_key(self, key: str) -> Reservation | None:
        """The reservation holding an idempotency key, or None."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(reservations).where(reservations.c.idempotency_key == key)
            ).first()
        return _to_reservation(row) if row is not None else None

    def reservations(
        self,
        states: Collection[State] | None = None,
        *,
        user_id: str | None = None,
        region: str | None = None,
    ) -> list[Reservation]:
        """Reservations, optionally only in some states, of one user or in one region."""
        query = select(reservations).order_by(
            reservations.c.created_at, reservations.c.reservation_id
        )
        if states is not None:
            query = query.where(reservations.c.state.in_(list(states)))
        if user_id is not None:
            query = query.where(reservations.c.user_id == user_id)
        if region is not None:
            query = query.where(reservations.c.region == region)
        with self.engine.begin() as conn:
            return [_to_reservation(row) for row in conn.execute(query)]

    def ready_to_warm(self, now: datetime) -> list[Reservation]:
        """Provisioning reservations whose recorded resources are ready by ``now``."""
        query = select(reservations).where(
            reservations.c.state == "provisioning",
            reservations.c.ready_at.is_not(None),
            reservations.c.ready_at <= now,
        )
        with self.engine.begin() as conn:
            return [_to_reservation(row) for row in conn.execute(query)]

    def due_for_expiry(self, now: datetime) -> list[Reservation]:
        """Unused holds (requested, provisioning, warm) whose TTL has passed by ``now``."""
        query = select(reservations).where(
            reservations.c.state.in_(list(HOLDING)), reservations.c.expires_at <= now
        )
        with self.engine.begin() as conn:
            return [_to_reservation(row) for row in conn.execute(query)]

    def warm_spend(self) -> dict[str, float]:
        """USD per hour of the warm holds (requested, provisioning, warm), per region."""
        with self.engine.begin() as conn:
            return self._warm_spend(conn)

    def count_journal(self, reservation_id: str, reason_prefix: str) -> int:
        """How many journal entries of the reservation have a reason starting with the prefix."""
        query = select(func.count()).where(
            journal.c.reservation_id == reservation_id,
            journal.c.reason.startswith(reason_prefix, autoescape=True),
        )
        with self.engine.begin() as conn:
            return int(conn.execute(query).scalar_one())

    def journal(self, reservation_id: str | None = None) -> list[JournalEntry]:
        """Every state change, oldest first; of one reservation when an id is given."""
        query = select(journal).order_by(journal.c.entry_id)
        if reservation_id is not None:
            query = query.where(journal.c.reservation_id == reservation_id)
        with self.engine.begin() as conn:
            return [
                JournalEntry(
                    row.entry_id,
                    row.reservation_id,
                    row.from_state,
                    row.to_state,
                    row.at,
                    row.reason,
                )
                for row in conn.execute(query)
            ]

    # -- internals ---------------------------------------------------------------------------

    def _create_schema(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            metadata.create_all(conn)
            present = set(conn.execute(select(locks.c.name)).scalars())
            if "budget" not in present:
                conn.execute(insert(locks).values(name="budget"))

    @staticmethod
    def _lock(conn: Connection, name: str) -> None:
        """Hold the named lock row until the transaction ends (PostgreSQL; SQLite is locked)."""
        conn.execute(select(locks.c.name).where(locks.c.name == name).with_for_update()).one()

    @staticmethod
    def _get(conn: Connection, reservation_id: str, for_update: bool = False) -> Reservation:
        query = select(reservations).where(reservations.c.reservation_id == reservation_id)
        if for_update:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise KeyError(f"no reservation {reservation_id!r} in the ledger")
        return _to_reservation(row)

    @staticmethod
    def _warm_spend(conn: Connection) -> dict[str, float]:
        query = (
            select(reservations.c.region, func.sum(reservations.c.warm_usd_per_hour))
            .where(reservations.c.state.in_(list(HOLDING)))
            .group_by(reservations.c.region)
        )
        return {region: float(total) for region, total in conn.execute(query)}


def _journal(
    conn: Connection,
    reservation_id: str,
    from_state: State | None,
    to_state: State,
    at: datetime,
    reason: str,
) -> None:
    conn.execute(
        insert(journal).values(
            reservation_id=reservation_id,
            from_state=from_state,
            to_state=to_state,
            at=at,
            reason=reason,
        )
    )


def _to_reservation(row: Any) -> Reservation:
    return Reservation(
        reservation_id=row.reservation_id,
        idempotency_key=row.idempotency_key,
        user_id=row.user_id,
        region=row.region,
        window_start=row.window_start,
        window_end=row.window_end,
        spec=spec_of(row),
        warm_fraction=row.warm_fraction,
        warm_usd_per_hour=row.warm_usd_per_hour,
        full_usd_per_hour=row.full_usd_per_hour,
        state=row.state,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        ready_at=row.ready_at,
        reason=row.reason,
    )
