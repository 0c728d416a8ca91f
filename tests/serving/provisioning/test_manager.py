"""The Pre-Allocation Manager: plan to warm capacity, activation, release, expiry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.regions import RegionCatalogue, load_regions
from core.settings import Settings
from serving.provisioning.clock import ManualClock
from serving.provisioning.ledger import Ledger
from serving.provisioning.local import LocalProvider
from serving.provisioning.manager import OUTCOMES, PreAllocationManager
from serving.provisioning.pricing import hourly_usd
from serving.provisioning.provider import KINDS, CapacityError, ResourceSpec
from serving.provisioning.states import IllegalTransitionError
from tests.serving.provisioning.conftest import (
    T0,
    build_manager,
    plan_frame,
    with_provisioning,
    write_regions,
)

BOOTED = T0 + timedelta(minutes=5)


def held_by_provider(manager: PreAllocationManager) -> dict[str, ResourceSpec]:
    """Total capacity the provider holds per reservation."""
    totals: dict[str, list[ResourceSpec]] = {}
    for resource in manager.provider.inventory():
        totals.setdefault(resource.reservation_id, []).append(resource.spec)
    return {
        rid: ResourceSpec(
            *(sum(getattr(s, f) for s in specs) for f in ResourceSpec.__annotations__)
        )
        for rid, specs in totals.items()
    }


def test_every_preallocate_row_gets_an_outcome_and_counts_reconcile(
    manager: PreAllocationManager,
) -> None:
    plan = plan_frame(6, regions=("aws-us-east-1", "aws-eu-west-1"))
    plan.loc[1, "action"] = "keep"
    plan.loc[2, "region"] = "nowhere-1"
    plan.loc[3, "cpu_cores"] = -1.0
    plan.loc[4, "window_start"] = T0 - timedelta(hours=2)
    plan.loc[4, "window_end"] = T0 - timedelta(minutes=1)

    result = manager.request_batch(plan, T0)

    preallocate = plan.index[plan["action"] == "preallocate"]
    assert list(result.outcomes["plan_row"]) == list(preallocate)
    assert result.other_rows == 1
    assert sum(result.counts().values()) == len(preallocate)
    assert set(result.counts()) == set(OUTCOMES)
    by_row = result.outcomes.set_index("plan_row")
    assert by_row.loc[[0, 5], "outcome"].tolist() == ["created", "created"]
    assert by_row.loc[2, "reason"] == "region 'nowhere-1' is not in the region catalogue"
    assert "cpu_cores must be a finite number >= 0" in by_row.loc[3, "reason"]
    assert "the window ended" in by_row.loc[4, "reason"]
    assert by_row.loc[[2, 3, 4], "outcome"].tolist() == ["invalid"] * 3
    assert len(manager.ledger.reservations()) == 2


def test_naive_timestamps_are_refused_not_guessed(manager: PreAllocationManager) -> None:
    plan = plan_frame(1)
    plan["window_start"] = plan["window_start"].dt.tz_localize(None)

    [outcome] = manager.request_batch(plan, T0).outcomes.itertuples()

    assert outcome.outcome == "invalid"
    assert "timezone-aware" in outcome.reason


def test_a_plan_without_a_required_column_is_rejected_whole(manager: PreAllocationManager) -> None:
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['network_mbps'\]"):
        manager.request_batch(plan_frame(2).drop(columns="network_mbps"), T0)


def test_rerunning_a_plan_creates_nothing_new(
    manager: PreAllocationManager, clock: ManualClock
) -> None:
    plan = plan_frame(5)
    first = manager.request_batch(plan, T0)
    clock.set(T0 + timedelta(minutes=1))
    second = manager.request_batch(plan, clock())

    assert first.counts()["created"] == 5
    assert second.counts()["existing"] == 5
    assert list(second.outcomes["reservation_id"]) == list(first.outcomes["reservation_id"])
    assert len(manager.ledger.reservations()) == 5
    assert len(manager.provider.inventory()) == 5 * len(KINDS)


def test_holds_boot_then_turn_warm_at_the_warm_fraction(
    manager: PreAllocationManager, clock: ManualClock, settings: Settings
) -> None:
    result = manager.request_batch(plan_frame(2), T0)
    assert set(result.outcomes["state"]) == {"provisioning"}

    clock.set(BOOTED)
    assert manager.promote_ready(clock()) == 2

    warm = manager.ledger.reservations(["warm"])
    assert len(warm) == 2
    fraction = settings.provisioning.warm_fraction
    full = ResourceSpec(4.0, 16.0, 3000.0, 100.0)
    assert set(held_by_provider(manager).values()) == {full.scaled(fraction)}
    region = load_regions()["aws-us-east-1"]
    assert warm[0].warm_usd_per_hour == pytest.approx(hourly_usd(region, full.scaled(fraction)))


def test_the_budget_caps_warm_spend(settings: Settings, clock: ManualClock) -> None:
    price = hourly_usd(load_regions()["aws-us-east-1"], ResourceSpec(4, 16, 3000, 100).scaled(0.25))
    capped = with_provisioning(settings, warm_fraction=0.25, region_budget_usd_per_hour=5.5 * price)
    manager = build_manager(capped, clock)

    result = manager.request_batch(plan_frame(8), T0)

    assert result.counts()["created"] == 5
    assert result.counts()["over_budget"] == 3
    assert sum(manager.ledger.warm_spend().values()) <= 5.5 * price
    assert len(held_by_provider(manager)) == 5


def test_no_capacity_is_reported_then_retried_in_place(
    tmp_path: Path, settings: Settings, clock: ManualClock
) -> None:
    small = settings.model_copy(update={"regions_file": write_regions(tmp_path / "r.csv", 2.5)})
    manager = build_manager(small, clock)  # two warm holds of 1 vCPU fit, a third does not

    first = manager.request_batch(plan_frame(3), T0)
    assert first.outcomes["outcome"].tolist() == ["created", "created", "no_capacity"]
    refused = first.outcomes.iloc[2]
    assert "no capacity" in refused["reason"]
    assert manager.ledger.get(refused["reservation_id"]).state == "failed"

    manager.release(first.outcomes.iloc[0]["reservation_id"], T0)
    again = manager.request_batch(plan_frame(3), T0)

    assert again.outcomes["outcome"].tolist() == ["existing", "existing", "created"]
    assert again.outcomes.iloc[2]["reservation_id"] == refused["reservation_id"]
    assert len(manager.ledger.reservations()) == 3


def test_a_provider_error_is_reported_as_failed(settings: Settings, clock: ManualClock) -> None:
    regions = load_regions()
    aws_only = RegionCatalogue(tuple(r for r in regions if r.provider == "aws"))
    cloud = LocalProvider.from_settings(settings, clock)
    provider = LocalProvider(cloud.engine, aws_only, 90, 20, clock)
    manager = PreAllocationManager(Ledger.from_settings(settings), provider, settings, regions)
    gcp = next(r.code for r in regions if r.provider == "gcp")

    result = manager.request_batch(plan_frame(2, regions=("aws-us-east-1", gcp)), T0)

    assert result.outcomes["outcome"].tolist() == ["created", "failed"]
    assert "provider error" in result.outcomes.iloc[1]["reason"]


def test_activation_scales_a_warm_hold_to_the_full_allocation(
    manager: PreAllocationManager, clock: ManualClock
) -> None:
    [rid] = manager.request_batch(plan_frame(1), T0).outcomes["reservation_id"]
    with pytest.raises(IllegalTransitionError, match="provisioning -> active"):
        manager.activate(rid, T0 + timedelta(seconds=10))

    clock.set(BOOTED)
    active = manager.activate(rid, clock())

    assert active.state == "active"
    assert held_by_provider(manager)[rid] == ResourceSpec(4.0, 16.0, 3000.0, 100.0)
    assert manager.activate(rid, clock()) == active
    assert manager.ledger.warm_spend() == {}


def test_activation_the_region_cannot_hold_leaves_the_hold_warm(
    tmp_path: Path, settings: Settings, clock: ManualClock
) -> None:
    small = settings.model_copy(update={"regions_file": write_regions(tmp_path / "r.csv", 3)})
    manager = build_manager(small, clock)
    [rid] = manager.request_batch(plan_frame(1), T0).outcomes["reservation_id"]
    clock.set(BOOTED)

    with pytest.raises(CapacityError):
        manager.activate(rid, clock())
    assert manager.ledger.get(rid).state == "warm"


def test_release_happens_exactly_once(manager: PreAllocationManager, clock: ManualClock) -> None:
    warm_rid, active_rid = manager.request_batch(plan_frame(2), T0).outcomes["reservation_id"]
    clock.set(BOOTED)
    manager.activate(active_rid, clock())

    assert [manager.release(warm_rid, clock()), manager.release(warm_rid, clock())] == [1, 0]
    assert [manager.release(active_rid, clock()), manager.release(active_rid, clock())] == [1, 0]
    assert manager.provider.inventory() == []
    steps = [(e.from_state, e.to_state) for e in manager.ledger.journal(active_rid)]
    assert steps[-2:] == [("active", "releasing"), ("releasing", "released")]


def test_an_interrupted_release_is_finished_by_the_next_call(
    manager: PreAllocationManager,
) -> None:
    [rid] = manager.request_batch(plan_frame(1), T0).outcomes["reservation_id"]
    manager.ledger.transition(rid, "releasing", T0, "release began, then the process died")

    assert manager.release(rid, T0) == 1
    assert manager.ledger.get(rid).state == "released"
    assert manager.provider.inventory() == []


def test_unused_holds_expire_ttl_after_their_window_starts(
    manager: PreAllocationManager, clock: ManualClock, settings: Settings
) -> None:
    plan = plan_frame(3)
    unused, used, _ = manager.request_batch(plan, T0).outcomes["reservation_id"]
    clock.set(BOOTED)
    manager.activate(used, clock())
    expires = plan.loc[0, "window_start"] + timedelta(hours=settings.provisioning.ttl_hours)
    assert manager.ledger.get(unused).expires_at == expires

    assert manager.expire(expires - timedelta(seconds=1)) == 0
    assert manager.expire(expires) == 2
    assert manager.expire(expires) == 0

    assert manager.ledger.get(unused).state == "released"
    assert "TTL passed" in manager.ledger.journal(unused)[-2].reason
    assert manager.ledger.get(used).state == "active"
    assert set(held_by_provider(manager)) == {used}


def test_outcomes_frame_is_empty_but_typed_for_a_plan_with_nothing_to_do(
    manager: PreAllocationManager,
) -> None:
    plan = plan_frame(2)
    plan["action"] = "keep"

    result = manager.request_batch(plan, T0)

    assert result.outcomes.empty
    assert "outcome" in result.outcomes.columns
    assert result.other_rows == 2
    assert result.counts() == dict.fromkeys(OUTCOMES, 0)


def test_plan_timestamps_may_be_pandas_or_python(manager: PreAllocationManager) -> None:
    plan = plan_frame(1)
    plan["window_start"] = plan["window_start"].astype(object)
    plan["window_end"] = [pd.Timestamp(v).to_pydatetime() for v in plan["window_end"]]

    assert manager.request_batch(plan, T0).counts()["created"] == 1
