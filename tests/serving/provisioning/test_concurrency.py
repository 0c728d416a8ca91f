"""The warm-spend cap holds when two OS processes provision at the same moment."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pandas as pd
import pytest

from core.regions import load_regions
from core.settings import Settings
from serving.provisioning.clock import ManualClock
from serving.provisioning.ledger import Ledger
from serving.provisioning.pricing import hourly_usd
from serving.provisioning.provider import ResourceSpec
from tests.serving.provisioning.conftest import T0, build_manager, plan_frame, with_provisioning

FORK = multiprocessing.get_context("fork")
WARM_FRACTION = 0.25
SPEC = ResourceSpec(4.0, 16.0, 3000.0, 100.0)


def _provision(settings: Settings, plan: pd.DataFrame, start, results) -> None:
    """Child process: open everything afresh, wait for the other one, provision the plan."""
    manager = build_manager(settings, ManualClock(T0))
    start.wait(timeout=60)
    results.put(manager.request_batch(plan, T0).counts())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_together_stay_within_the_budget(
    backend: str, request: pytest.FixtureRequest, settings: Settings
) -> None:
    price = hourly_usd(load_regions()["aws-us-east-1"], SPEC.scaled(WARM_FRACTION))
    capped = with_provisioning(
        settings,
        warm_fraction=WARM_FRACTION,
        region_budget_usd_per_hour=7.5 * price,
        budget_usd_per_hour=100.0,
        cold_boot_seconds=0,
        ledger_url=request.getfixturevalue("pg_url") if backend == "postgresql" else None,
    )
    shared = plan_frame(4, user_prefix="both")
    plans = [
        pd.concat([plan_frame(10, user_prefix=name), shared], ignore_index=True)
        for name in ("first", "second")
    ]
    start, results = FORK.Barrier(2), FORK.Queue()
    children = [
        FORK.Process(target=_provision, args=(capped, plan, start, results)) for plan in plans
    ]
    for child in children:
        child.start()
    counts = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0

    ledger = Ledger.from_settings(capped)
    held = ledger.reservations(["warm"])
    assert sum(c["created"] for c in counts) == 7 == len(held)
    assert sum(ledger.warm_spend().values()) <= 7.5 * price + 1e-9
    assert sum(c["over_budget"] + c["existing"] for c in counts) == 2 * 14 - 7
    assert len({r.idempotency_key for r in ledger.reservations()}) == len(ledger.reservations())
    assert all(r.expires_at > T0 + timedelta(hours=1) for r in held)
    ledger.dispose()
