"""One user's session state as every store keeps it, and the errors a store raises.

A session is opaque bytes with a ``version`` (1 when created, +1 on every write) and a
``frozen`` flag. A frozen session cannot be written: a migration freezes it at the source
before copying it, and a copy arrives at the target frozen until the user is redirected there,
so at most one copy of a session is ever writable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def checksum_of(data: bytes) -> str:
    """The SHA-256 of a session's bytes (hex): what a migration verifies after the copy."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class SessionState:
    """A session as stored: its bytes, version, frozen flag and checksum."""

    user_id: str
    data: bytes
    version: int
    frozen: bool
    checksum: str

    @classmethod
    def of(cls, user_id: str, data: bytes, version: int, frozen: bool) -> SessionState:
        """A state with its checksum computed from ``data``."""
        return cls(user_id, data, version, frozen, checksum_of(data))

    @property
    def size_bytes(self) -> int:
        """Length of the state (what a copy has to move)."""
        return len(self.data)


class SessionError(Exception):
    """A session store refused an operation."""


class SessionNotFoundError(SessionError):
    """The store holds no session for this user."""


class SessionFrozenError(SessionError):
    """A write to a frozen session (it is being migrated)."""


class SessionVersionError(SessionError):
    """A write that expected another version than the stored one (a lost update was avoided)."""


class SessionConflictError(SessionError):
    """A migration copy would overwrite a writable session at its target."""
