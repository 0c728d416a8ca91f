"""The life of a reservation: its states and the only transitions allowed between them.

The main line is ``requested -> provisioning -> warm -> active -> releasing -> released``.
Beside it:

- ``expired``: a hold whose TTL passed before it was used (from requested, provisioning or
  warm); its resources are given back and it ends ``released``.
- ``failed``: the provider refused (no capacity) or broke; it may be retried in place
  (``failed -> requested``), so one idempotency key keeps exactly one reservation.
- ``warm -> provisioning``: the provider lost the resources and they were re-requested.
- any live state, or ``failed``, ``-> releasing``: the caller gives the reservation back.

``released`` is the only end state.
"""

from __future__ import annotations

from typing import Literal

State = Literal[
    "requested", "provisioning", "warm", "active", "releasing", "released", "failed", "expired"
]
STATES: tuple[State, ...] = (
    "requested",
    "provisioning",
    "warm",
    "active",
    "releasing",
    "released",
    "failed",
    "expired",
)

TRANSITIONS: dict[State, frozenset[State]] = {
    "requested": frozenset({"provisioning", "failed", "expired", "releasing"}),
    "provisioning": frozenset({"warm", "failed", "expired", "releasing"}),
    "warm": frozenset({"active", "provisioning", "expired", "releasing"}),
    "active": frozenset({"releasing"}),
    "releasing": frozenset({"released"}),
    "expired": frozenset({"released"}),
    "failed": frozenset({"requested", "releasing"}),
    "released": frozenset(),
}

LIVE: frozenset[State] = frozenset({"requested", "provisioning", "warm", "active"})
"""Reservations that should hold provider resources (or are about to)."""

HOLDING: frozenset[State] = frozenset({"requested", "provisioning", "warm"})
"""Reservations whose warm hold counts against the budget (active ones are in use)."""

CLOSING: frozenset[State] = frozenset({"releasing", "expired"})
"""Reservations whose resources are being given back; the reconciler finishes them."""


class IllegalTransitionError(ValueError):
    """A reservation was asked to move between two states the life cycle does not connect."""


def check_transition(reservation_id: str, current: State, target: State) -> None:
    """Raise :class:`IllegalTransitionError` unless ``current -> target`` is allowed."""
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (end state)"
        raise IllegalTransitionError(
            f"reservation {reservation_id}: {current} -> {target} is not allowed "
            f"(from {current}: {allowed})"
        )
