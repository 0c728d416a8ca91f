"""The session store interface, its rules written once, and one store per region.

:class:`SessionRules` implements every operation (put, freeze, unfreeze, restore, delete) as
one atomic read-compute-write of a single session, so the rules (a frozen session is never
written, versions only grow, a migration copy never overwrites a writable session) are written
once and hold on every backend, even with several processes writing at once. A backend only
has to make that read-compute-write atomic: a write-locked transaction (``sql_store``), or,
where there are no transactions, compare-and-set on a token that names the stored state
(:class:`CasSessionStore`: a Redis script in ``redis_store``, S3 conditional writes on the
ETag in ``s3_store``).
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

from core.settings import Settings
from serving.sessions.state import (
    SessionConflictError,
    SessionFrozenError,
    SessionNotFoundError,
    SessionState,
    SessionVersionError,
)

Token = Any
"""What identifies one stored state of a session, as a backend sees it (opaque here)."""


class SessionStore(Protocol):
    """The sessions of one region."""

    region: str

    def get(self, user_id: str) -> SessionState | None:
        """The user's session here, or None."""
        ...

    def put(self, user_id: str, data: bytes, expected_version: int | None = None) -> SessionState:
        """Write the session (version + 1; created at version 1).

        Raises SessionFrozenError when it is frozen, SessionVersionError when
        ``expected_version`` is given and is not the stored version (0: must not exist yet).
        """
        ...

    def delete(self, user_id: str, frozen_only: bool = False, checksum: str | None = None) -> bool:
        """Remove the session; True if this call removed it.

        With ``frozen_only`` a writable session is kept (a migration removes only the frozen
        copies it made or left behind); with ``checksum`` only a session with that checksum.
        """
        ...

    def checksum(self, user_id: str) -> str | None:
        """SHA-256 of the session's bytes, or None when there is none."""
        ...

    def list(self) -> builtins.list[str]:
        """The users with a session here, sorted."""
        ...

    def freeze(self, user_id: str) -> SessionState:
        """Make the session read-only (idempotent); raises SessionNotFoundError."""
        ...

    def unfreeze(self, user_id: str) -> SessionState | None:
        """Make the session writable again (idempotent); None when there is none."""
        ...

    def restore(self, state: SessionState) -> SessionState:
        """Write a copy of ``state`` (bytes and version), frozen.

        Replaces a frozen copy; raises SessionConflictError rather than overwrite a writable
        session (that would serve one user from two places).
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


Compute = Callable[[SessionState | None], SessionState | None]
"""Given the stored state (None: no session), the state to store (None: delete it)."""


class SessionRules(ABC):
    """The session rules, on a backend's atomic read-compute-write (``_change``)."""

    region: str

    @abstractmethod
    def _get(self, user_id: str) -> SessionState | None:
        """The stored session, or None."""

    @abstractmethod
    def _change(self, user_id: str, compute: Compute) -> SessionState | None:
        """Store ``compute(stored)`` atomically (nothing when it returns the stored state).

        Returns what ``compute`` returned; an exception from ``compute`` changes nothing.
        """

    @abstractmethod
    def _users(self) -> builtins.list[str]:
        """The users with a session here."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    # -- reading -----------------------------------------------------------------------------

    def get(self, user_id: str) -> SessionState | None:
        """The user's session here, or None."""
        return self._get(user_id)

    def checksum(self, user_id: str) -> str | None:
        """SHA-256 of the session's bytes, or None when there is none."""
        state = self.get(user_id)
        return state.checksum if state else None

    def list(self) -> builtins.list[str]:
        """The users with a session here, sorted."""
        return sorted(self._users())

    # -- changing ----------------------------------------------------------------------------

    def put(self, user_id: str, data: bytes, expected_version: int | None = None) -> SessionState:
        """Write the session (version + 1; created at version 1); see SessionStore.put."""

        def write(current: SessionState | None) -> SessionState:
            stored_version = current.version if current else 0
            if expected_version is not None and expected_version != stored_version:
                raise SessionVersionError(
                    f"session {user_id} in {self.region}: version {stored_version}, "
                    f"expected {expected_version}"
                )
            if current is not None and current.frozen:
                raise SessionFrozenError(
                    f"session {user_id} in {self.region} is frozen (being migrated)"
                )
            return SessionState.of(user_id, bytes(data), stored_version + 1, frozen=False)

        changed = self._change(user_id, write)
        assert changed is not None
        return changed

    def freeze(self, user_id: str) -> SessionState:
        """Make the session read-only (idempotent); raises SessionNotFoundError."""
        changed = self._change(user_id, lambda current: self._flagged(user_id, current, True))
        assert changed is not None
        return changed

    def unfreeze(self, user_id: str) -> SessionState | None:
        """Make the session writable again (idempotent); None when there is none."""
        return self._change(
            user_id, lambda current: current and self._flagged(user_id, current, False)
        )

    def restore(self, state: SessionState) -> SessionState:
        """Write a frozen copy of ``state``; see SessionStore.restore."""
        copy = SessionState(state.user_id, state.data, state.version, True, state.checksum)

        def write(current: SessionState | None) -> SessionState:
            if current is not None and not current.frozen:
                raise SessionConflictError(
                    f"session {state.user_id} in {self.region} is writable (version "
                    f"{current.version}); a copy must not overwrite it"
                )
            return copy

        changed = self._change(state.user_id, write)
        assert changed is not None
        return changed

    def delete(self, user_id: str, frozen_only: bool = False, checksum: str | None = None) -> bool:
        """Remove the session; see SessionStore.delete."""
        removed = False

        def remove(current: SessionState | None) -> SessionState | None:
            nonlocal removed
            if current is None:
                return None
            if (frozen_only and not current.frozen) or checksum not in (None, current.checksum):
                return current
            removed = True
            return None

        self._change(user_id, remove)
        return removed

    def _flagged(self, user_id: str, current: SessionState | None, frozen: bool) -> SessionState:
        if current is None:
            raise SessionNotFoundError(f"no session for {user_id} in {self.region}")
        return SessionState(user_id, current.data, current.version, frozen, current.checksum)


class CasSessionStore(SessionRules):
    """The rules on a backend that offers only compare-and-set (Redis, S3)."""

    @abstractmethod
    def _load(self, user_id: str) -> tuple[SessionState, Token] | None:
        """The stored session and its token, or None."""

    @abstractmethod
    def _swap(self, user_id: str, token: Token | None, new: SessionState | None) -> bool:
        """Replace the state ``token`` names (None: no session) with ``new`` (None: delete).

        False, changing nothing, when the stored state is no longer the one ``token`` names.
        """

    def _get(self, user_id: str) -> SessionState | None:
        loaded = self._load(user_id)
        return loaded[0] if loaded else None

    def _change(self, user_id: str, compute: Compute) -> SessionState | None:
        """Read with a token, compute, compare-and-set; again from the top on a lost race."""
        while True:
            loaded = self._load(user_id)
            current, token = loaded if loaded else (None, None)
            new = compute(current)
            if new == current:
                return new
            if self._swap(user_id, token, new):
                return new


class SessionStores:
    """One session store per region, opened on first use (``settings.router.session_store``)."""

    def __init__(self, opener: Callable[[str], SessionStore]) -> None:
        self._opener = opener
        self._open: dict[str, SessionStore] = {}

    def __getitem__(self, region: str) -> SessionStore:
        store = self._open.get(region)
        if store is None:
            store = self._open[region] = self._opener(region)
        return store

    def close(self) -> None:
        """Close every store opened so far."""
        for store in self._open.values():
            store.close()
        self._open.clear()


def open_session_stores(settings: Settings) -> SessionStores:
    """The configured stores: SQLite files under the serving folder, Redis, or S3 buckets."""
    router = settings.router
    if router.session_store == "redis":
        from serving.sessions.redis_store import RedisSessionStore

        return SessionStores(
            lambda region: RedisSessionStore(
                router.redis_url, f"{router.redis_prefix}sessions:", region
            )
        )
    if router.session_store == "s3":
        from serving.sessions.s3_store import S3SessionStore

        return SessionStores(
            lambda region: S3SessionStore(
                router.session_s3_bucket.format(region=region),
                region,
                endpoint_url=router.session_s3_endpoint_url,
            )
        )
    from serving.sessions.sql_store import SqlSessionStore

    lock_timeout = settings.provisioning.lock_timeout_seconds
    folder = settings.serving_dir / "sessions"
    return SessionStores(
        lambda region: SqlSessionStore.sqlite(folder / f"{region}.sqlite", region, lock_timeout)
    )
