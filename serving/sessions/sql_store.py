"""Sessions of one region in a SQL database (the embedded default: one SQLite file per region).

Each change reads, decides and writes in one transaction that holds the write lock from its
start (``BEGIN IMMEDIATE`` on SQLite, the row locked ``FOR UPDATE`` on PostgreSQL); two
processes creating the same session at once collide on the primary key and the loser retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from serving.provisioning.db import make_engine, sqlite_url
from serving.sessions.state import SessionState
from serving.sessions.store import Compute, SessionRules

metadata = MetaData()

sessions = Table(
    "sessions",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("version", Integer, nullable=False),
    Column("frozen", Boolean, nullable=False),
    Column("checksum", String(64), nullable=False),
)


class SqlSessionStore(SessionRules):
    """The sessions of one region in one SQLAlchemy database."""

    def __init__(self, engine: Engine, region: str) -> None:
        self.engine = engine
        self.region = region
        metadata.create_all(engine)

    @classmethod
    def sqlite(cls, path: Path, region: str, lock_timeout_seconds: float) -> SqlSessionStore:
        """The store of ``region`` in the SQLite file ``path`` (created when missing)."""
        return cls(make_engine(sqlite_url(path), lock_timeout_seconds), region)

    def close(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    def _get(self, user_id: str) -> SessionState | None:
        with self.engine.begin() as conn:
            return _read(conn, user_id)

    def _change(self, user_id: str, compute: Compute) -> SessionState | None:
        while True:
            try:
                with self.engine.begin() as conn:
                    current = _read(conn, user_id, for_update=True)
                    new = compute(current)
                    if new == current:
                        return new
                    if new is None:
                        conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
                    elif current is None:
                        conn.execute(insert(sessions).values(**_values(new)))
                    else:
                        conn.execute(
                            update(sessions)
                            .where(sessions.c.user_id == user_id)
                            .values(**_values(new))
                        )
                    return new
            except IntegrityError:
                continue  # another process created the session first: decide again

    def _users(self) -> list[str]:
        with self.engine.begin() as conn:
            return list(conn.execute(select(sessions.c.user_id)).scalars())


def _read(conn: Connection, user_id: str, for_update: bool = False) -> SessionState | None:
    query = select(sessions).where(sessions.c.user_id == user_id)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        return None
    return SessionState.of(user_id, bytes(row.data), row.version, row.frozen)


def _values(state: SessionState) -> dict[str, Any]:
    return {
        "user_id": state.user_id,
        "data": state.data,
        "version": state.version,
        "frozen": state.frozen,
        "checksum": state.checksum,
    }
