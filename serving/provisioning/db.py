"""Database plumbing shared by the ledger, the migration journal and the local provider's cloud.

Both keep state in SQLAlchemy databases that several OS processes write at once (the DAG's
provisioning step, the router's migrations, a reconciler). Correctness rests on each
read-check-write happening in one serialised transaction:

- SQLite: every transaction starts with ``BEGIN IMMEDIATE``, which takes the database's write
  lock up front, so two processes cannot both read the same budget and then both insert. This
  follows SQLAlchemy's recipe of taking BEGIN over from the ``sqlite3`` driver.
- PostgreSQL: callers lock a row with ``SELECT ... FOR UPDATE`` (the ledger's budget row).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, DateTime, Engine, Float, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator

from serving.provisioning.provider import ResourceSpec

SPEC_COLUMNS: tuple[str, ...] = ("cpu_cores", "ram_gb", "storage_iops", "network_mbps")
"""The four resources of a ``ResourceSpec``, one Float column each in every table holding one."""


def spec_columns() -> list[Column]:
    """Fresh ``Column`` objects for a spec (a Column belongs to one table only)."""
    return [Column(name, Float, nullable=False) for name in SPEC_COLUMNS]


def spec_values(spec: ResourceSpec) -> dict[str, float]:
    """A spec as the values of its columns (for an insert or update)."""
    return {name: float(getattr(spec, name)) for name in SPEC_COLUMNS}


def spec_of(row: Any) -> ResourceSpec:
    """The spec held in a row's spec columns."""
    return ResourceSpec(*(getattr(row, name) for name in SPEC_COLUMNS))


def make_engine(url: str, lock_timeout_seconds: float) -> Engine:
    """An engine for ``url``; on SQLite with WAL and write-locked (``IMMEDIATE``) transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": lock_timeout_seconds})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{path.resolve()}"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamps must be timezone-aware, got {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
