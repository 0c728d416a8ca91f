"""Drift between the ledger and the provider's inventory, found without changing either.

The provider's inventory is the truth of what exists; the ledger is the truth of what should.
Three kinds of drift, each with its repair (applied by ``PreAllocationManager.reconcile``):

- orphans: provider resources whose reservation is not live in the ledger (unknown, failed,
  expiring, releasing, released) are released;
- missing: a live reservation (requested, provisioning, warm, active) that the provider does
  not fully hold, or whose resources were never recorded, is re-requested with the same
  idempotency key (the provider returns what it already holds for that key, so this never
  duplicates); a warm or active one it lost is journaled as a re-request, and their count is the
  request's ``attempt``, so that a provider deduplicating by token creates replacements;
- closing: reservations left in ``releasing`` or ``expired`` by an interrupted release are
  taken on to ``released``.

The inventory must be read *before* the ledger: a resource is only ever created after its
reservation was committed, so whatever the inventory shows has a ledger row by the time the
ledger is read, and a reservation in flight is never mistaken for an orphan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from serving.provisioning.ledger import Reservation
from serving.provisioning.provider import ProviderResource
from serving.provisioning.states import CLOSING, LIVE

REREQUESTED = "reconcile: re-requested"
"""How the journal entry of a re-request after a loss begins (they are counted as attempts)."""


@dataclass(frozen=True)
class Drift:
    """What differs between the ledger and the provider."""

    orphans: dict[str, list[ProviderResource]]
    missing: list[Reservation]
    closing: list[Reservation]

    @property
    def empty(self) -> bool:
        """True when ledger and provider agree."""
        return not (self.orphans or self.missing or self.closing)


@dataclass
class ReconcileReport:
    """What one reconciliation found and repaired (reservation ids)."""

    orphans_released: list[str] = field(default_factory=list)
    orphan_resources: int = 0
    missing_rerequested: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    promoted: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """Counts and ids, ready for a log line or an Airflow XCom."""
        return {
            "orphans_released": len(self.orphans_released),
            "orphan_resources": self.orphan_resources,
            "missing_rerequested": len(self.missing_rerequested),
            "closed": len(self.closed),
            "promoted": self.promoted,
            "errors": dict(self.errors),
        }


def find_drift(
    inventory: Iterable[ProviderResource],
    reservations: Iterable[Reservation],
    recorded_kinds: Mapping[str, set[str]],
) -> Drift:
    """Compare the provider's ``inventory`` with the ledger's unfinished ``reservations``.

    ``reservations`` should hold every reservation not yet ``released``; ``recorded_kinds``
    the kinds of resource the ledger recorded for each of them.
    """
    held: dict[str, list[ProviderResource]] = {}
    for resource in inventory:
        held.setdefault(resource.reservation_id, []).append(resource)
    reservations = list(reservations)
    live = {r.reservation_id: r for r in reservations if r.state in LIVE}

    orphans = {rid: resources for rid, resources in held.items() if rid not in live}
    missing = []
    for reservation in live.values():
        recorded = recorded_kinds.get(reservation.reservation_id, set())
        present = {r.kind for r in held.get(reservation.reservation_id, [])}
        if not recorded or not recorded <= present:
            missing.append(reservation)
    closing = [r for r in reservations if r.state in CLOSING]
    return Drift(orphans, missing, closing)
