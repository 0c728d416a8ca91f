"""The Pre-Allocation Manager: turns a placement plan into warm capacity, and looks after it.

Used by the ``predict_and_provision`` DAG (:meth:`request_batch`, :meth:`expire`,
:meth:`reconcile`), by the router when a user moves (:meth:`activate`, :meth:`release`), and
by the closed-loop evaluation, which drives simulated time: every method takes ``now``.

Every step is safe to kill and re-run. A reservation is committed to the ledger (``requested``)
before the provider is asked for anything, the provider is idempotent on the reservation's
key, and what the provider returned is recorded afterwards; a re-run, or :meth:`reconcile`,
picks up wherever a killed run stopped, so nothing is held twice and nothing is left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import pandas as pd

from core.regions import RegionCatalogue, load_regions
from core.settings import Settings
from serving.provisioning.clock import Clock, system_clock
from serving.provisioning.ledger import (
    Budget,
    Ledger,
    NewReservation,
    Reservation,
    idempotency_key,
)
from serving.provisioning.plan_rows import (
    PreallocationRow,
    RefusedRow,
    count_other_actions,
    preallocation_rows,
)
from serving.provisioning.pricing import hourly_usd
from serving.provisioning.provider import (
    CapacityError,
    Provider,
    ProviderError,
    ProviderResource,
    ProvisionRequest,
    ResourceSpec,
)
from serving.provisioning.reconcile import REREQUESTED, ReconcileReport, find_drift
from serving.provisioning.states import CLOSING, HOLDING, LIVE, check_transition

Outcome = Literal["created", "existing", "over_budget", "no_capacity", "failed", "invalid"]
OUTCOMES: tuple[Outcome, ...] = (
    "created",
    "existing",
    "over_budget",
    "no_capacity",
    "failed",
    "invalid",
)
OUTCOME_COLUMNS: tuple[str, ...] = (
    "plan_row",
    "user_id",
    "region",
    "window_start",
    "idempotency_key",
    "reservation_id",
    "state",
    "outcome",
    "reason",
)


@dataclass(frozen=True)
class RowOutcome:
    """What became of one pre-allocation row of a plan."""

    plan_row: Hashable
    user_id: object
    region: object
    window_start: object
    idempotency_key: str | None
    reservation_id: str | None
    state: str | None
    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class BatchResult:
    """Per-row outcomes of one plan (every ``preallocate`` row, in plan order)."""

    outcomes: pd.DataFrame
    other_rows: int

    def counts(self) -> dict[str, int]:
        """Rows per outcome (every outcome present, zeros included)."""
        found = self.outcomes["outcome"].value_counts()
        return {outcome: int(found.get(outcome, 0)) for outcome in OUTCOMES}


class PreAllocationManager:
    """Pre-allocations from a plan, kept in the ledger and realised by a provider."""

    def __init__(
        self,
        ledger: Ledger,
        provider: Provider,
        settings: Settings,
        catalogue: RegionCatalogue | None = None,
    ) -> None:
        self.ledger = ledger
        self.provider = provider
        self.config = settings.provisioning
        self.catalogue = catalogue if catalogue is not None else load_regions(settings.regions_file)
        self.budget = Budget(
            self.config.budget_usd_per_hour, self.config.region_budget_usd_per_hour
        )

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = system_clock) -> PreAllocationManager:
        """The configured ledger and provider (``provisioning.provider``)."""
        from serving.provisioning.providers import make_provider

        return cls(Ledger.from_settings(settings), make_provider(settings, clock), settings)

    def close(self) -> None:
        """Release the ledger's and the provider's connections."""
        self.ledger.dispose()
        dispose = getattr(self.provider, "dispose", None)
        if dispose is not None:
            dispose()

    # -- from a plan -------------------------------------------------------------------------

    def request_batch(self, plan: pd.DataFrame, now: datetime) -> BatchResult:
        """Hold warm capacity for every ``preallocate`` row of ``plan``; one outcome per row.

        Outcomes: ``created`` (new, or a failed one retried), ``existing`` (the key was already
        in the ledger; an interrupted one is carried on), ``over_budget``, ``no_capacity``,
        ``failed`` (the provider broke), ``invalid`` (the row itself is wrong). ``keep`` rows
        ask for nothing and are counted in ``other_rows``.
        """
        self.promote_ready(now)
        outcomes = [
            self._refused(label, row)
            if isinstance(row, RefusedRow)
            else self.request(label, row, now)
            for label, row in preallocation_rows(plan, self.catalogue, now)
        ]
        frame = pd.DataFrame([vars(o) for o in outcomes], columns=list(OUTCOME_COLUMNS))
        return BatchResult(frame, count_other_actions(plan))

    def request(self, label: Hashable, row: PreallocationRow, now: datetime) -> RowOutcome:
        """Admit and bring up one pre-allocation (idempotent on user, region, window start)."""
        new = self._new_reservation(row, now)
        admission = self.ledger.admit(new, self.budget, now)
        reservation = admission.reservation

        def outcome(kind: Outcome, reason: str, current: Reservation | None) -> RowOutcome:
            return RowOutcome(
                label,
                row.user_id,
                row.region,
                row.window_start,
                new.idempotency_key,
                current.reservation_id if current else None,
                current.state if current else None,
                kind,
                reason,
            )

        if admission.outcome == "over_budget":
            return outcome("over_budget", admission.reason, reservation)
        assert reservation is not None
        if admission.outcome == "existing" and not self._interrupted(reservation):
            return outcome("existing", admission.reason, reservation)
        brought_up, problem = self._bring_up(reservation, now)
        if problem is not None:
            return outcome(problem, brought_up.reason, brought_up)
        if admission.outcome == "existing":
            return outcome(
                "existing", f"resumed an interrupted run: {brought_up.state}", brought_up
            )
        return outcome("created", brought_up.reason, brought_up)

    def _new_reservation(self, row: PreallocationRow, now: datetime) -> NewReservation:
        region = self.catalogue[row.region]
        warm = self.config.warm_fraction
        starts = max(now, row.window_start)
        return NewReservation(
            idempotency_key=idempotency_key(row.user_id, row.region, row.window_start),
            user_id=row.user_id,
            region=row.region,
            window_start=row.window_start,
            window_end=row.window_end,
            spec=row.spec,
            warm_fraction=warm,
            warm_usd_per_hour=hourly_usd(region, row.spec.scaled(warm)),
            full_usd_per_hour=hourly_usd(region, row.spec),
            expires_at=starts + timedelta(hours=self.config.ttl_hours),
        )

    def _interrupted(self, reservation: Reservation) -> bool:
        """A run stopped between admitting this reservation and recording its resources."""
        if reservation.state == "requested":
            return True
        if reservation.state != "provisioning":
            return False
        return reservation.reservation_id not in self.ledger.recorded_kinds(
            [reservation.reservation_id]
        )

    @staticmethod
    def _refused(label: Hashable, row: RefusedRow) -> RowOutcome:
        return RowOutcome(
            label,
            row.user_id,
            row.region,
            row.window_start,
            None,
            None,
            None,
            "invalid",
            row.reason,
        )

    # -- bringing capacity up ----------------------------------------------------------------

    def _bring_up(
        self, reservation: Reservation, now: datetime, attempt: int = 0
    ) -> tuple[Reservation, Outcome | None]:
        """Ask the provider for a requested/provisioning reservation; record what it holds.

        Returns the reservation afterwards and, when the provider refused, the outcome that
        says why (``no_capacity`` or ``failed``). ``attempt`` counts the reconciler's re-requests.
        """
        current, _ = self.ledger.try_transition(
            reservation.reservation_id,
            "provisioning",
            now,
            f"asking the {self.provider.name} provider for the warm hold",
            from_states={"requested"},
            ready_at=None,
        )
        if current.state != "provisioning":
            return current, None  # another process took it on (or released it) meanwhile
        try:
            resources = self.provider.provision(
                _request(current, current.warm_spec, warm=True, attempt=attempt)
            )
        except CapacityError as error:
            return self._fail(current, now, f"no capacity: {error}"), "no_capacity"
        except ProviderError as error:
            return self._fail(current, now, f"provider error: {error}"), "failed"
        return self._record(current, resources, now), None

    def _record(
        self, reservation: Reservation, resources: list[ProviderResource], now: datetime
    ) -> Reservation:
        """Record the provider's resources; warm them if ready; give them back if unwanted."""
        current = self.ledger.record_resources(reservation.reservation_id, resources, now)
        if current.state not in LIVE:  # released or expired while the provider was busy
            self.provider.release(current.reservation_id)
            return current
        if current.state == "provisioning" and current.ready_at is not None:
            if current.ready_at <= now:
                current, _ = self.ledger.try_transition(
                    current.reservation_id,
                    "warm",
                    now,
                    f"warm: {len(resources)} resource(s) ready",
                    from_states={"provisioning"},
                )
            else:
                ready = current.ready_at.isoformat()
                current = self.ledger.note(
                    current.reservation_id,
                    now,
                    f"booting: {len(resources)} resource(s) until {ready}",
                )
        return current

    def _fail(self, reservation: Reservation, now: datetime, reason: str) -> Reservation:
        """Mark a reservation failed and drop whatever the provider may have half-created."""
        current, _ = self.ledger.try_transition(
            reservation.reservation_id, "failed", now, reason, from_states={"provisioning"}
        )
        # Anything the provider cannot release now is an orphan: the next reconcile releases it.
        with contextlib.suppress(ProviderError):
            self.provider.release(reservation.reservation_id)
        return current

    def promote_ready(self, now: datetime) -> int:
        """Provisioning reservations whose resources are ready by ``now`` become warm."""
        promoted = 0
        for reservation in self.ledger.ready_to_warm(now):
            _, moved = self.ledger.try_transition(
                reservation.reservation_id,
                "warm",
                now,
                f"warm: resources ready at {reservation.ready_at.isoformat()}",
                from_states={"provisioning"},
            )
            promoted += moved
        return promoted

    # -- using and giving back ---------------------------------------------------------------

    def activate(self, reservation_id: str, now: datetime) -> Reservation:
        """Scale a warm reservation to its full allocation: the user is being served there.

        Idempotent (an active reservation is returned as it is). Raises IllegalTransitionError
        if it is not warm (still booting, expired, released...), CapacityError if the region
        cannot hold the full allocation (the reservation then stays warm).
        """
        self.promote_ready(now)
        current = self.ledger.get(reservation_id)
        if current.state == "active":
            return current
        check_transition(reservation_id, current.state, "active")
        resources = self.provider.scale(reservation_id, current.spec)
        ready = max((r.ready_at for r in resources if r.ready_at is not None), default=now)
        self.ledger.record_resources(reservation_id, resources, now)
        return self.ledger.transition(
            reservation_id,
            "active",
            now,
            f"activated: scaled to the full allocation, ready at {ready.isoformat()}",
            ready_at=ready,
        )

    def release(self, reservation_id: str, now: datetime, reason: str = "released") -> int:
        """Give a reservation's resources back: 1 if this call released it, 0 if it already was.

        Works from any state but ``released`` (where it is a no-op), including a release that
        was interrupted half-way; two concurrent calls release it once between them.
        """
        current = self.ledger.get(reservation_id)
        if current.state == "released":
            return 0
        if current.state not in CLOSING:
            current, _ = self.ledger.try_transition(
                reservation_id,
                "releasing",
                now,
                reason,
                from_states=LIVE | {"failed"},
            )
        if current.state not in CLOSING:
            return 0
        return int(self._finish_release(current, now))

    def expire(self, now: datetime) -> int:
        """Release every hold whose TTL passed before it was used; how many expired now."""
        expired = 0
        for reservation in self.ledger.due_for_expiry(now):
            current, moved = self.ledger.try_transition(
                reservation.reservation_id,
                "expired",
                now,
                f"TTL passed at {reservation.expires_at.isoformat()} without being used",
                from_states=HOLDING,
            )
            if moved:
                expired += 1
                self._finish_release(current, now)
        return expired

    def _finish_release(self, reservation: Reservation, now: datetime) -> bool:
        """Release at the provider, then close the reservation; True if this call closed it."""
        count = self.provider.release(reservation.reservation_id)
        _, moved = self.ledger.try_transition(
            reservation.reservation_id,
            "released",
            now,
            f"the provider released {count} resource(s)",
            from_states=CLOSING,
        )
        return moved

    # -- keeping ledger and provider in step -------------------------------------------------

    def reconcile(self, now: datetime) -> ReconcileReport:
        """Repair drift between ledger and provider (see ``serving.provisioning.reconcile``)."""
        report = ReconcileReport()
        inventory = self.provider.inventory()  # first: see reconcile.py for why
        unfinished = self.ledger.reservations(LIVE | CLOSING | {"failed"})
        recorded = self.ledger.recorded_kinds([r.reservation_id for r in unfinished])
        drift = find_drift(inventory, unfinished, recorded)

        for reservation_id, resources in drift.orphans.items():
            released = self.provider.release(reservation_id)
            report.orphans_released.append(reservation_id)
            report.orphan_resources += released
            # Resources tagged with an id the ledger never saw have no journal to write to.
            with contextlib.suppress(KeyError):
                self.ledger.note(
                    reservation_id,
                    now,
                    f"reconcile: released {released} orphaned resource(s) "
                    f"({', '.join(r.resource_id for r in resources)})",
                )
        for reservation in drift.closing:
            if self._finish_release(reservation, now):
                report.closed.append(reservation.reservation_id)
        for reservation in drift.missing:
            error = self._rerequest(reservation, now)
            if error is None:
                report.missing_rerequested.append(reservation.reservation_id)
            else:
                report.errors[reservation.reservation_id] = error
        report.promoted = self.promote_ready(now)
        return report

    def _rerequest(self, reservation: Reservation, now: datetime) -> str | None:
        """Ask the provider again, with the same key, for what a live reservation should hold.

        A reservation whose recorded resources the provider no longer holds was lost: that is
        journaled as a re-request first, and the number of such entries is the ``attempt`` the
        provider gets, so that a replacement is never mistaken for a retry of the lost original.
        An active reservation comes back at its full allocation (its user is being served).
        """
        rid = reservation.reservation_id
        current = reservation
        if current.state == "warm":
            current, moved = self.ledger.try_transition(
                rid,
                "provisioning",
                now,
                f"{REREQUESTED}: the provider does not hold this warm reservation",
                from_states={"warm"},
                ready_at=None,
            )
            if not moved:
                return None
        elif self.ledger.recorded_kinds([rid]):
            current = self.ledger.note(
                rid, now, f"{REREQUESTED}: the provider lost this {current.state} reservation"
            )
        attempt = self.ledger.count_journal(rid, REREQUESTED)
        if current.state != "active":
            current, problem = self._bring_up(current, now, attempt)
            return current.reason if problem else None
        try:
            resources = self.provider.provision(
                _request(current, current.spec, warm=False, attempt=attempt)
            )
        except ProviderError as error:
            self.ledger.note(rid, now, f"reconcile: re-request failed: {error}")
            return str(error)
        self.ledger.record_resources(rid, resources, now)
        return None


def _request(
    reservation: Reservation, spec: ResourceSpec, warm: bool, attempt: int = 0
) -> ProvisionRequest:
    """What the provider is asked to hold for ``reservation`` (its idempotency key included)."""
    return ProvisionRequest(
        reservation_id=reservation.reservation_id,
        idempotency_key=reservation.idempotency_key,
        user_id=reservation.user_id,
        region=reservation.region,
        spec=spec,
        expires_at=reservation.expires_at,
        warm=warm,
        attempt=attempt,
    )
