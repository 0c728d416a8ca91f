"""Acceptance: kill the provisioning step anywhere, re-run it, and nothing is doubled or lost.

The provisioning of a plan runs in a child OS process that is killed with SIGKILL, either by
itself right before or right after its n-th call to the (real, local) provider, or by the
parent after a random delay. Then the step is re-run to completion and reconciled, and the
ledger and the provider must agree exactly with a run that was never killed.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from core.settings import Settings
from serving.provisioning.clock import ManualClock
from serving.provisioning.ledger import Ledger
from serving.provisioning.local import LocalProvider
from serving.provisioning.manager import BatchResult, PreAllocationManager
from serving.provisioning.provider import KINDS, Provider, ProviderResource
from serving.provisioning.reconcile import find_drift
from serving.provisioning.states import CLOSING, LIVE
from tests.serving.provisioning.conftest import (
    T0,
    build_manager,
    plan_frame,
    with_provisioning,
)

FORK = multiprocessing.get_context("fork")
BUDGET_USD_PER_HOUR = 0.3  # between four and five warm holds of the plan below


class DieAtCall:
    """The real local provider, in a process that SIGKILLs itself around its n-th call."""

    def __init__(self, inner: LocalProvider, n: int, when: str) -> None:
        self.inner, self.n, self.when, self.calls = inner, n, when, 0
        self.name = inner.name

    def _call(self, method: str, *args: object):
        self.calls += 1
        if self.calls == self.n and self.when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = getattr(self.inner, method)(*args)
        if self.calls == self.n and self.when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def provision(self, request) -> list[ProviderResource]:
        return self._call("provision", request)

    def scale(self, reservation_id, spec) -> list[ProviderResource]:
        return self._call("scale", reservation_id, spec)

    def release(self, reservation_id) -> int:
        return self._call("release", reservation_id)

    def inventory(self) -> list[ProviderResource]:
        return self._call("inventory")


def _provision_child(settings: Settings, plan: pd.DataFrame, n: int, when: str) -> None:
    clock = ManualClock(T0)
    provider: Provider = LocalProvider.from_settings(settings, clock)
    if n:
        provider = DieAtCall(provider, n, when)
    manager = PreAllocationManager(Ledger.from_settings(settings), provider, settings)
    manager.request_batch(plan, T0)


def run_child(
    settings: Settings,
    plan: pd.DataFrame,
    n: int = 0,
    when: str = "after",
    kill_after_s: float | None = None,
) -> int:
    """Provision ``plan`` in a child process; returns its exit code (-9 when killed)."""
    child = FORK.Process(target=_provision_child, args=(settings, plan, n, when))
    child.start()
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=60)
    return child.exitcode


def scenario_settings(base: Settings, home: Path, ledger_url: str | None = None) -> Settings:
    """A fresh home with a budget so small that the plan below meets every outcome."""
    home.mkdir(parents=True)
    configured = with_provisioning(
        base,
        warm_fraction=0.25,
        region_budget_usd_per_hour=10.0,
        budget_usd_per_hour=BUDGET_USD_PER_HOUR,
        ledger_url=ledger_url,
    )
    return configured.model_copy(update={"home": home})


def kill_test_plan() -> pd.DataFrame:
    """Twelve rows over three regions: one wants more bandwidth than its region has, one
    names a region that does not exist, and the budget runs out after four warm holds."""
    plan = plan_frame(12, regions=("aws-us-east-1", "aws-eu-west-1", "aws-us-west-2"))
    plan.loc[2, "network_mbps"] = 1e7  # bandwidth is not priced, so only capacity refuses it
    plan.loc[5, "region"] = "nowhere-1"
    return plan


def finish(settings: Settings) -> tuple[PreAllocationManager, BatchResult]:
    """Re-run the step to completion in this process, then reconcile."""
    manager = build_manager(settings, ManualClock(T0))
    result = manager.request_batch(kill_test_plan(), T0)
    manager.reconcile(T0)
    return manager, result


def live_keys(manager: PreAllocationManager) -> set[str]:
    return {r.idempotency_key for r in manager.ledger.reservations(LIVE)}


def assert_consistent(manager: PreAllocationManager, result: BatchResult) -> None:
    """One reservation per key, provider == live ledger, nothing orphaned, caps kept."""
    everything = manager.ledger.reservations()
    assert len({r.idempotency_key for r in everything}) == len(everything)
    assert sum(result.counts().values()) == len(kill_test_plan())
    assert result.counts()["failed"] == 0

    inventory = manager.provider.inventory()
    live = {r.reservation_id for r in manager.ledger.reservations(LIVE)}
    assert {r.reservation_id for r in inventory} == live
    per_kind = Counter((r.reservation_id, r.kind) for r in inventory)
    assert set(per_kind.values()) == {1}
    assert len(per_kind) == len(live) * len(KINDS)
    assert manager.ledger.reservations(CLOSING) == []

    unfinished = manager.ledger.reservations(LIVE | CLOSING | {"failed"})
    recorded = manager.ledger.recorded_kinds([r.reservation_id for r in unfinished])
    assert find_drift(inventory, unfinished, recorded).empty
    assert sum(manager.ledger.warm_spend().values()) <= BUDGET_USD_PER_HOUR + 1e-9


@pytest.fixture
def reference(tmp_path: Path, settings: Settings) -> tuple[set[str], dict[str, int]]:
    """What a run that is never killed ends with: the live keys and the outcome counts."""
    manager, result = finish(scenario_settings(settings, tmp_path / "reference"))
    assert_consistent(manager, result)
    counts = result.counts()
    assert counts["created"] > 0 and counts["over_budget"] > 0
    assert counts["no_capacity"] > 0 and counts["invalid"] == 1
    return live_keys(manager), counts


# The plan's provider calls, in order: provision rows 0, 1 and 2 (refused: no capacity),
# release row 2's leftovers, provision rows 3 and 4.
@pytest.mark.parametrize(
    "kills",
    [
        [(1, "before")],
        [(1, "after")],
        [(3, "before")],
        [(4, "after")],
        [(5, "before")],
        [(6, "after")],
        [(2, "after"), (2, "before"), (3, "after")],  # killed again while recovering
    ],
)
def test_killed_at_a_provider_call_then_rerun(
    kills: list[tuple[int, str]], tmp_path: Path, settings: Settings, reference
) -> None:
    scenario = scenario_settings(settings, tmp_path / "killed")
    for n, when in kills:
        assert run_child(scenario, kill_test_plan(), n, when) == -signal.SIGKILL

    manager, result = finish(scenario)

    assert_consistent(manager, result)
    assert live_keys(manager) == reference[0]
    refused = ("over_budget", "no_capacity")  # a retried refusal may meet the budget first
    assert sum(result.counts()[o] for o in refused) == sum(reference[1][o] for o in refused)


@pytest.fixture(scope="module")
def full_run_seconds(tmp_path_factory: pytest.TempPathFactory) -> float:
    """How long one uninterrupted child run takes here (start-up included)."""
    home = tmp_path_factory.mktemp("timed")
    scenario = scenario_settings(Settings(home=home), home / "run")
    started = time.perf_counter()
    assert run_child(scenario, kill_test_plan()) == 0
    return time.perf_counter() - started


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_at_a_random_moment_then_rerun(
    seed: int, tmp_path: Path, settings: Settings, reference, full_run_seconds: float
) -> None:
    scenario = scenario_settings(settings, tmp_path / "killed")
    rng = random.Random(seed)
    for _ in range(2):
        run_child(scenario, kill_test_plan(), kill_after_s=rng.uniform(0.2, 1.0) * full_run_seconds)

    manager, result = finish(scenario)

    assert_consistent(manager, result)
    assert live_keys(manager) == reference[0]


def test_killed_with_the_ledger_on_postgresql(
    tmp_path: Path, settings: Settings, pg_url: str, reference
) -> None:
    scenario = scenario_settings(settings, tmp_path / "killed", ledger_url=pg_url)
    assert run_child(scenario, kill_test_plan(), 4, "after") == -signal.SIGKILL
    assert run_child(scenario, kill_test_plan(), 2, "before") == -signal.SIGKILL

    manager, result = finish(scenario)

    assert_consistent(manager, result)
    assert live_keys(manager) == reference[0]
    manager.ledger.dispose()
