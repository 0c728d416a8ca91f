"""The reservation ledger on SQLite and PostgreSQL: keys, journal, budget, transitions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from core.settings import Settings
from serving.provisioning.db import sqlite_url
from serving.provisioning.ledger import (
    Budget,
    Ledger,
    NewReservation,
    idempotency_key,
    reservations,
)
from serving.provisioning.provider import ProviderResource, ResourceSpec
from serving.provisioning.states import IllegalTransitionError
from tests.serving.provisioning.conftest import T0

ROOMY = Budget(global_usd_per_hour=100.0, region_usd_per_hour=100.0)


def new_reservation(user: str, region: str = "aws-us-east-1", price: float = 1.0) -> NewReservation:
    start = T0 + timedelta(hours=1)
    return NewReservation(
        idempotency_key=idempotency_key(user, region, start),
        user_id=user,
        region=region,
        window_start=start,
        window_end=start + timedelta(hours=2),
        spec=ResourceSpec(4, 16, 3000, 100),
        warm_fraction=0.25,
        warm_usd_per_hour=price,
        full_usd_per_hour=4 * price,
        expires_at=start + timedelta(hours=3),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Ledger]:
    """An empty ledger on SQLite (the embedded default) and on PostgreSQL (production)."""
    if request.param == "sqlite":
        url = sqlite_url(settings.serving_dir / "ledger.sqlite")
    else:
        url = request.getfixturevalue("pg_url")
    opened = Ledger.from_url(url)
    yield opened
    opened.dispose()


def test_a_key_is_admitted_once_and_journalled(ledger: Ledger) -> None:
    first = ledger.admit(new_reservation("ana"), ROOMY, T0)
    again = ledger.admit(new_reservation("ana"), ROOMY, T0 + timedelta(minutes=5))

    assert first.outcome == "created"
    assert again.outcome == "existing"
    assert again.reservation.reservation_id == first.reservation.reservation_id
    assert len(ledger.reservations()) == 1
    [entry] = ledger.journal(first.reservation.reservation_id)
    assert (entry.from_state, entry.to_state, entry.at) == (None, "requested", T0)
    assert entry.reason


def test_the_database_itself_refuses_a_second_row_for_a_key(ledger: Ledger) -> None:
    row = ledger.admit(new_reservation("ana"), ROOMY, T0).reservation
    duplicate = {c.name: getattr(row, c.name, None) for c in reservations.columns}
    duplicate.update(
        reservation_id="another-id",
        cpu_cores=4,
        ram_gb=16,
        storage_iops=3000,
        network_mbps=100,
    )
    with pytest.raises(IntegrityError), ledger.engine.begin() as conn:
        conn.execute(insert(reservations).values(**duplicate))


def test_timestamps_come_back_as_the_same_utc_instants(ledger: Ledger) -> None:
    created = ledger.admit(new_reservation("ana"), ROOMY, T0).reservation
    stored = ledger.get(created.reservation_id)

    assert stored.created_at == T0
    assert stored.window_start == T0 + timedelta(hours=1)
    assert stored.created_at.utcoffset() == timedelta(0)


def test_every_transition_is_journalled_and_illegal_ones_raise(ledger: Ledger) -> None:
    rid = ledger.admit(new_reservation("ana"), ROOMY, T0).reservation.reservation_id
    ledger.transition(rid, "provisioning", T0 + timedelta(seconds=1), "asked the provider")
    ledger.transition(rid, "warm", T0 + timedelta(seconds=90), "booted")

    with pytest.raises(IllegalTransitionError, match="warm -> released"):
        ledger.transition(rid, "released", T0 + timedelta(seconds=91), "skipping releasing")

    history = [(e.from_state, e.to_state, e.reason) for e in ledger.journal(rid)]
    assert history == [
        (None, "requested", "planned pre-allocation"),
        ("requested", "provisioning", "asked the provider"),
        ("provisioning", "warm", "booted"),
    ]
    assert ledger.get(rid).state == "warm"


def test_try_transition_leaves_a_reservation_another_process_moved_on(ledger: Ledger) -> None:
    rid = ledger.admit(new_reservation("ana"), ROOMY, T0).reservation.reservation_id
    ledger.transition(rid, "releasing", T0, "given back")

    current, moved = ledger.try_transition(
        rid, "provisioning", T0, "late provisioner", from_states={"requested"}
    )
    assert (current.state, moved) == ("releasing", False)
    assert len(ledger.journal(rid)) == 2


def test_the_region_cap_and_the_global_cap_both_bind(ledger: Ledger) -> None:
    budget = Budget(global_usd_per_hour=5.0, region_usd_per_hour=3.0)
    outcomes = [
        ledger.admit(new_reservation(f"u{i}", "aws-us-east-1"), budget, T0).outcome
        for i in range(4)
    ] + [
        ledger.admit(new_reservation(f"v{i}", "aws-eu-west-1"), budget, T0).outcome
        for i in range(4)
    ]

    assert outcomes[:4] == ["created"] * 3 + ["over_budget"]
    assert outcomes[4:] == ["created"] * 2 + ["over_budget"] * 2
    assert ledger.warm_spend() == {"aws-us-east-1": 3.0, "aws-eu-west-1": 2.0}
    refused = ledger.admit(new_reservation("w", "aws-eu-west-1"), budget, T0)
    assert "global" in refused.reason
    assert ledger.by_key(new_reservation("w", "aws-eu-west-1").idempotency_key) is None


def test_active_and_released_reservations_free_the_warm_budget(ledger: Ledger) -> None:
    budget = Budget(global_usd_per_hour=2.0, region_usd_per_hour=2.0)
    first = ledger.admit(new_reservation("a"), budget, T0).reservation.reservation_id
    second = ledger.admit(new_reservation("b"), budget, T0).reservation.reservation_id
    assert ledger.admit(new_reservation("c"), budget, T0).outcome == "over_budget"

    for step in ("provisioning", "warm", "active"):
        ledger.transition(first, step, T0, step)
    ledger.transition(second, "releasing", T0, "given back")

    assert ledger.warm_spend() == {}
    assert ledger.admit(new_reservation("c"), budget, T0).outcome == "created"


def test_a_failed_reservation_is_retried_in_place(ledger: Ledger) -> None:
    rid = ledger.admit(new_reservation("ana"), ROOMY, T0).reservation.reservation_id
    ledger.transition(rid, "provisioning", T0, "asked")
    ledger.transition(rid, "failed", T0, "no capacity: region full")

    retry = ledger.admit(new_reservation("ana"), ROOMY, T0 + timedelta(hours=1))

    assert retry.outcome == "retried"
    assert retry.reservation.reservation_id == rid
    assert retry.reservation.state == "requested"
    assert ledger.journal(rid)[-1].from_state == "failed"
    assert len(ledger.reservations()) == 1


def test_recorded_resources_give_kinds_and_the_latest_ready_time(ledger: Ledger) -> None:
    rid = ledger.admit(new_reservation("ana"), ROOMY, T0).reservation.reservation_id
    spec = ResourceSpec(1, 4, 0, 0)
    ready = [T0 + timedelta(seconds=30), T0 + timedelta(seconds=90)]
    resources = [
        ProviderResource(f"r-{kind}", rid, "ana", "aws-us-east-1", kind, "provisioning", spec, at)
        for kind, at in zip(("compute", "storage"), ready, strict=True)
    ]

    recorded = ledger.record_resources(rid, resources, T0)

    assert recorded.ready_at == ready[-1]
    assert ledger.recorded_kinds() == {rid: {"compute", "storage"}}


def test_keys_differ_by_user_region_and_window_start() -> None:
    start = datetime.fromisoformat("2026-01-05T13:00:00+00:00")
    keys = {
        idempotency_key("ana", "aws-us-east-1", start),
        idempotency_key("bob", "aws-us-east-1", start),
        idempotency_key("ana", "aws-eu-west-1", start),
        idempotency_key("ana", "aws-us-east-1", start + timedelta(hours=1)),
    }
    assert len(keys) == 4
