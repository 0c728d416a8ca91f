"""Router state in one SQLite file (the embedded default); see ``serving.router.store``.

Write-ahead logging with ``synchronous=NORMAL``: a committed transaction survives a killed
process; a power cut may lose the last few, never half of one. Records are stored as JSON.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from serving.router.models import (
    IntentStatus,
    Rejection,
    RouteState,
    RoutingConfig,
    StoredConfig,
    SwitchoverIntent,
)
from serving.router.store import NoPreviousConfigError, StaleVersionError

SCHEMA = """
CREATE TABLE IF NOT EXISTS config (
    slot TEXT PRIMARY KEY CHECK (slot IN ('current', 'previous')),
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0);
CREATE TABLE IF NOT EXISTS routes (user_id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS intents (
    intent_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS intents_by_status ON intents (status, created_at);
CREATE TABLE IF NOT EXISTS rejections (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS executor_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, expires_at REAL NOT NULL
);
"""

# SQLite allows at most 32,766 host parameters per statement.
MAX_PARAMETERS = 30_000


class SqliteRouterStore:
    """The router's state in a SQLite file, safe to share between the threads of one process."""

    kind = "sqlite"

    def __init__(self, path: Path, rejections_kept: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.rejections_kept = rejections_kept
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def generation(self) -> int:
        return self._read("SELECT value FROM meta WHERE key = 'generation'")[0][0]

    def current_config(self) -> StoredConfig | None:
        return self._config("current")

    def previous_config(self) -> StoredConfig | None:
        return self._config("previous")

    def _config(self, slot: str) -> StoredConfig | None:
        rows = self._read("SELECT body FROM config WHERE slot = ?", (slot,))
        return StoredConfig.model_validate_json(rows[0][0]) if rows else None

    def put_config(self, config: RoutingConfig, pushed_at: datetime) -> None:
        body = StoredConfig(config=config, pushed_at=pushed_at).model_dump_json()
        with self._transaction() as db:
            row = db.execute("SELECT version FROM config WHERE slot = 'current'").fetchone()
            if row is not None and config.version <= row[0]:
                raise StaleVersionError(config.version, row[0])
            db.execute("DELETE FROM config WHERE slot = 'previous'")
            db.execute("UPDATE config SET slot = 'previous' WHERE slot = 'current'")
            db.execute(
                "INSERT INTO config (slot, version, body) VALUES ('current', ?, ?)",
                (config.version, body),
            )
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    def rollback_config(self) -> StoredConfig:
        with self._transaction() as db:
            row = db.execute("SELECT body FROM config WHERE slot = 'previous'").fetchone()
            if row is None:
                raise NoPreviousConfigError("no previous config to roll back to")
            db.execute("DELETE FROM config WHERE slot = 'current'")
            db.execute("UPDATE config SET slot = 'current' WHERE slot = 'previous'")
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        return StoredConfig.model_validate_json(row[0])

    def routes(self, user_ids: Sequence[str]) -> dict[str, RouteState]:
        found: dict[str, RouteState] = {}
        ids = list(user_ids)
        for start in range(0, len(ids), MAX_PARAMETERS):
            chunk = ids[start : start + MAX_PARAMETERS]
            marks = ",".join("?" * len(chunk))
            rows = self._read(f"SELECT user_id, body FROM routes WHERE user_id IN ({marks})", chunk)
            found.update((user, RouteState.from_json(body)) for user, body in rows)
        return found

    def hold_executor_lease(self, holder: str, ttl_s: float) -> bool:
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT holder, expires_at FROM executor_lease").fetchone()
            if row is not None and row[0] != holder and row[1] > now:
                return False
            db.execute(
                "INSERT OR REPLACE INTO executor_lease (id, holder, expires_at) VALUES (1, ?, ?)",
                (holder, now + ttl_s),
            )
            return True

    def release_executor_lease(self, holder: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM executor_lease WHERE holder = ?", (holder,))

    def route_user_ids(self) -> list[str]:
        return [user for (user,) in self._read("SELECT user_id FROM routes ORDER BY user_id")]

    def save(self, routes: Sequence[RouteState], intents: Sequence[SwitchoverIntent]) -> None:
        route_rows = [(r.user_id, r.to_json()) for r in routes]
        intent_rows = [
            (i.intent_id, i.status, _utc(i.created_at), i.model_dump_json()) for i in intents
        ]
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO routes (user_id, body) VALUES (?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET body = excluded.body",
                route_rows,
            )
            db.executemany(
                "INSERT OR IGNORE INTO intents (intent_id, status, created_at, body) "
                "VALUES (?, ?, ?, ?)",
                intent_rows,
            )

    def intent(self, intent_id: str) -> SwitchoverIntent | None:
        rows = self._read("SELECT body FROM intents WHERE intent_id = ?", (intent_id,))
        return SwitchoverIntent.model_validate_json(rows[0][0]) if rows else None

    def intents_by_id(self, intent_ids: Sequence[str]) -> dict[str, SwitchoverIntent]:
        found: dict[str, SwitchoverIntent] = {}
        ids = list(dict.fromkeys(intent_ids))
        for start in range(0, len(ids), MAX_PARAMETERS):
            chunk = ids[start : start + MAX_PARAMETERS]
            marks = ",".join("?" * len(chunk))
            rows = self._read(f"SELECT body FROM intents WHERE intent_id IN ({marks})", chunk)
            for (body,) in rows:
                intent = SwitchoverIntent.model_validate_json(body)
                found[intent.intent_id] = intent
        return found

    def intent_statuses(self, intent_ids: Sequence[str]) -> dict[str, IntentStatus]:
        found: dict[str, IntentStatus] = {}
        ids = list(dict.fromkeys(intent_ids))
        for start in range(0, len(ids), MAX_PARAMETERS):
            chunk = ids[start : start + MAX_PARAMETERS]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT intent_id, status FROM intents WHERE intent_id IN ({marks})"
            found.update(self._read(sql, chunk))
        return found

    def intents(
        self, status: IntentStatus | None = None, limit: int = 1000
    ) -> list[SwitchoverIntent]:
        if status is None:
            rows = self._read(
                "SELECT body FROM intents ORDER BY created_at, intent_id LIMIT ?", (limit,)
            )
        else:
            rows = self._read(
                "SELECT body FROM intents WHERE status = ? ORDER BY created_at, intent_id LIMIT ?",
                (status, limit),
            )
        return [SwitchoverIntent.model_validate_json(body) for (body,) in rows]

    def transition_intent(
        self,
        intent_id: str,
        expected: IntentStatus,
        new: IntentStatus,
        at: datetime,
        step: str | None = None,
    ) -> bool:
        with self._transaction() as db:
            row = db.execute(
                "SELECT body FROM intents WHERE intent_id = ? AND status = ?", (intent_id, expected)
            ).fetchone()
            if row is None:
                return False
            intent = SwitchoverIntent.model_validate_json(row[0])
            steps = [*intent.steps, step] if step else intent.steps
            changed = intent.model_copy(update={"status": new, "updated_at": at, "steps": steps})
            db.execute(
                "UPDATE intents SET status = ?, body = ? WHERE intent_id = ?",
                (new, changed.model_dump_json(), intent_id),
            )
        return True

    def record_rejection(self, rejection: Rejection) -> None:
        if self.rejections_kept == 0:
            return
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO rejections (body) VALUES (?)", (rejection.model_dump_json(),)
            )
            db.execute(
                "DELETE FROM rejections WHERE id <= ?", (cursor.lastrowid - self.rejections_kept,)
            )

    def rejections(self, limit: int = 100) -> list[Rejection]:
        rows = self._read("SELECT body FROM rejections ORDER BY id DESC LIMIT ?", (limit,))
        return [Rejection.model_validate_json(body) for (body,) in rows]

    def ping(self) -> None:
        self._read("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _utc(moment: datetime) -> str:
    """ISO text in UTC, so that text order is time order."""
    return moment.astimezone(UTC).isoformat()
