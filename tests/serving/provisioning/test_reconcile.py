"""Reconciliation: the ledger and the provider's inventory brought back into agreement."""

from __future__ import annotations

from datetime import timedelta

from serving.provisioning.clock import ManualClock
from serving.provisioning.manager import PreAllocationManager
from serving.provisioning.provider import KINDS, ProvisionRequest, ResourceSpec
from serving.provisioning.reconcile import find_drift
from serving.provisioning.states import CLOSING, LIVE
from tests.serving.provisioning.conftest import T0, plan_frame

BOOTED = T0 + timedelta(minutes=5)


def drift(manager: PreAllocationManager):
    unfinished = manager.ledger.reservations(LIVE | CLOSING | {"failed"})
    recorded = manager.ledger.recorded_kinds([r.reservation_id for r in unfinished])
    return find_drift(manager.provider.inventory(), unfinished, recorded)


def warm_reservations(manager: PreAllocationManager, clock: ManualClock, rows: int) -> list[str]:
    ids = list(manager.request_batch(plan_frame(rows), T0).outcomes["reservation_id"])
    clock.set(BOOTED)
    manager.promote_ready(clock())
    return ids


def test_a_consistent_system_has_no_drift(
    manager: PreAllocationManager, clock: ManualClock
) -> None:
    warm_reservations(manager, clock, 3)

    assert drift(manager).empty
    report = manager.reconcile(clock())
    assert report.as_dict()["orphans_released"] == 0
    assert report.as_dict()["missing_rerequested"] == 0


def test_resources_nobody_reserved_are_released(
    manager: PreAllocationManager, clock: ManualClock
) -> None:
    kept = warm_reservations(manager, clock, 2)
    manager.provider.provision(
        ProvisionRequest(
            reservation_id="stray",
            idempotency_key="stray-key",
            user_id="nobody",
            region="aws-us-east-1",
            spec=ResourceSpec(1, 4, 100, 10),
            expires_at=T0 + timedelta(hours=1),
        )
    )

    report = manager.reconcile(clock())

    assert report.orphans_released == ["stray"]
    assert report.orphan_resources == len(KINDS)
    assert {r.reservation_id for r in manager.provider.inventory()} == set(kept)
    assert drift(manager).empty


def test_resources_of_a_reservation_the_ledger_closed_are_released(
    manager: PreAllocationManager, clock: ManualClock
) -> None:
    gone, kept = warm_reservations(manager, clock, 2)
    manager.ledger.transition(gone, "releasing", clock(), "released in the ledger only")
    manager.ledger.transition(gone, "released", clock(), "the provider call was lost")

    report = manager.reconcile(clock())

    assert report.orphans_released == [gone]
    assert {r.reservation_id for r in manager.provider.inventory()} == {kept}
    assert "orphaned resource(s)" in manager.ledger.journal(gone)[-1].reason


def test_a_warm_reservation_the_provider_lost_is_re_requested_with_its_key(
    manager: PreAllocationManager, clock: ManualClock
) -> None:
    lost, _ = warm_reservations(manager, clock, 2)
    key = manager.ledger.get(lost).idempotency_key
    manager.provider.release(lost)  # the cloud lost it (outside our control)

    report = manager.reconcile(clock())

    assert report.missing_rerequested == [lost]
    resources = [r for r in manager.provider.inventory() if r.reservation_id == lost]
    assert sorted(r.kind for r in resources) == sorted(KINDS)
    assert {r.tags["prewarm:idempotency_key"] for r in resources} == {key}
    assert manager.ledger.get(lost).state == "provisioning"
    assert "re-requested" in manager.ledger.journal(lost)[-2].reason
    assert len(manager.ledger.reservations()) == 2

    clock.set(BOOTED + timedelta(minutes=5))
    manager.reconcile(clock())
    assert manager.ledger.get(lost).state == "warm"


def test_an_active_reservation_the_provider_lost_comes_back_at_full_size(
    manager: PreAllocationManager, clock: ManualClock
) -> None:
    [rid] = warm_reservations(manager, clock, 1)
    manager.activate(rid, clock())
    manager.provider.release(rid)

    manager.reconcile(clock())

    resources = manager.provider.inventory()
    assert sum(r.spec.cpu_cores for r in resources) == 4.0
    assert manager.ledger.get(rid).state == "active"
    assert drift(manager).empty


def test_interrupted_releases_and_expiries_are_finished(
    manager: PreAllocationManager, clock: ManualClock
) -> None:
    releasing, expiring, kept = warm_reservations(manager, clock, 3)
    manager.ledger.transition(releasing, "releasing", clock(), "the process died after this")
    manager.ledger.transition(expiring, "expired", clock(), "the process died after this")

    report = manager.reconcile(clock())

    assert sorted(report.closed) == sorted([releasing, expiring])
    assert manager.ledger.get(releasing).state == "released"
    assert manager.ledger.get(expiring).state == "released"
    assert {r.reservation_id for r in manager.provider.inventory()} == {kept}


def test_a_reservation_missing_one_kind_counts_as_missing(
    manager: PreAllocationManager, clock: ManualClock
) -> None:
    [rid] = warm_reservations(manager, clock, 1)
    held = [r for r in manager.provider.inventory() if r.kind != "network"]
    unfinished = manager.ledger.reservations(LIVE)

    found = find_drift(held, unfinished, manager.ledger.recorded_kinds())

    assert [r.reservation_id for r in found.missing] == [rid]
    assert not found.orphans
