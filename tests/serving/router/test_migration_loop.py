"""The router with its migration executor running: a decided switchover carried out end to end.

Everything is real: uvicorn on loopback, the router's SQLite state, the migration journal, the
ledger and local cloud (boots of a fraction of a second on the wall clock), the session stores.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from serving.provisioning.clock import system_clock
from serving.provisioning.manager import PreAllocationManager
from serving.provisioning.plan_rows import PreallocationRow
from serving.router.app import create_app
from serving.router.migration_loop import MigrationLoop
from serving.router.sqlite_store import SqliteRouterStore
from serving.sessions.store import open_session_stores
from tests.serving.router.conftest import (
    AUTH,
    EAST,
    TOKEN,
    WEST,
    allocation,
    config_json,
    free_port,
    live_server,
)
from tests.serving.router.migration_world import SPEC, digest, world_settings

USER = "u-mover"
SOURCE, TARGET = WEST, EAST
STATE = b"editor buffers, open files, shell history" * 100
BOOT_S = 0.2


@pytest.fixture
def fast(isolated_home: Path) -> Settings:
    """Boots, copies and polls of a fraction of a second, so a migration takes about one."""
    settings = world_settings(
        isolated_home, state_copy_fixed_s=0.05, state_copy_s_per_mb=0.0, migration_poll_s=0.05
    )
    provisioning = settings.provisioning.model_copy(
        update={"cold_boot_seconds": BOOT_S, "scale_up_seconds": BOOT_S}
    )
    return settings.model_copy(update={"provisioning": provisioning})


def hold(manager: PreAllocationManager, region: str) -> str:
    """A reservation for USER in ``region``, booted and warm; its id."""
    now = system_clock()
    row = PreallocationRow(USER, region, now, now + timedelta(hours=1e5), SPEC)
    outcome = manager.request(USER, row, now)
    assert outcome.reservation_id is not None, outcome.reason
    time.sleep(BOOT_S + 0.05)
    manager.promote_ready(system_clock())
    assert manager.ledger.get(outcome.reservation_id).state == "warm"
    return outcome.reservation_id


def test_a_decided_switchover_is_migrated_and_the_route_flips_at_the_redirect(
    fast: Settings,
) -> None:
    manager = PreAllocationManager.from_settings(fast)
    sessions = open_session_stores(fast)
    source = manager.activate(hold(manager, SOURCE), system_clock()).reservation_id
    target = hold(manager, TARGET)
    sessions[SOURCE].put(USER, STATE)

    seen: dict[str, str] = {}
    base: dict[str, str] = {}

    def look_between_steps(point: str) -> None:
        """The route as a client sees it just before and just after the redirect."""
        if point in ("before:redirected", "before:released"):
            seen[point] = httpx.get(f"{base['url']}/v1/routes/{USER}").json()["region"]

    app = create_app(fast, token=TOKEN, run_migrations=True, migration_faults=look_between_steps)
    with live_server(app, free_port()) as url, httpx.Client(base_url=url) as client:
        base["url"] = url
        plan = allocation(USER, TARGET, current=SOURCE, expected_latency_ms=80.0)
        client.post("/v1/config", json=config_json(1, plan), headers=AUTH).raise_for_status()
        bad = [{"user_id": USER, "region": SOURCE, "latency_ms": 250.0}] * 3
        decision = client.post("/v1/probes", json={"probes": bad}).json()["decisions"][0]
        assert (decision["action"], decision["code"]) == ("switch", "current_over_threshold")

        route = _wait_for(lambda: _settled(client), timeout_s=30)
        again = client.post("/v1/probes", json={"probes": bad[:1]}).json()["decisions"][0]

    assert seen == {"before:redirected": SOURCE, "before:released": TARGET}
    assert (route["region"], route["pending_switchover"]) == (TARGET, None)
    assert (again["action"], again["code"], again["region"]) == ("stay", "at_target", TARGET)
    moved = sessions[TARGET].get(USER)
    assert moved is not None and not moved.frozen and moved.checksum == digest(STATE)
    assert sessions[SOURCE].get(USER) is None
    releases = [e for e in manager.ledger.journal(source) if e.to_state == "released"]
    assert len(releases) == 1
    assert manager.ledger.get(target).state == "active"
    store = SqliteRouterStore(fast.serving_dir / fast.router.sqlite_file, rejections_kept=0)
    intent = store.intent(decision["intent_id"])
    store.close()
    assert intent is not None and intent.status == "done"
    assert intent.steps[-2:] == ["redirected", "released"]
    sessions.close()
    manager.ledger.dispose()


def test_the_loop_exports_the_routers_measurements_for_the_feedback_dag(fast: Settings) -> None:
    from serving.feedback import find_feedback_batches
    from serving.router.models import Probe
    from serving.router.service import RouterService

    store = SqliteRouterStore(fast.serving_dir / "router.sqlite", rejections_kept=0)
    RouterService(store, fast, system_clock).handle_probes(
        [Probe(user_id=USER, region=SOURCE, latency_ms=42.0)]
    )
    loop = MigrationLoop(fast, store)
    loop.export_feedback(system_clock())
    loop.export_feedback(system_clock())  # nothing changed since: no second batch
    store.close()
    assert len(find_feedback_batches(fast)) == 1


def test_the_loop_stops_promptly_while_a_migration_waits(fast: Settings) -> None:
    slow = fast.model_copy(
        update={"router": fast.router.model_copy(update={"state_copy_fixed_s": 3600.0})}
    )
    manager = PreAllocationManager.from_settings(slow)
    sessions = open_session_stores(slow)
    manager.activate(hold(manager, SOURCE), system_clock())
    hold(manager, TARGET)
    sessions[SOURCE].put(USER, STATE)
    app = create_app(slow, token=TOKEN, run_migrations=True)
    with live_server(app, free_port()) as url, httpx.Client(base_url=url) as client:
        plan = allocation(USER, TARGET, current=SOURCE, expected_latency_ms=80.0)
        client.post("/v1/config", json=config_json(1, plan), headers=AUTH).raise_for_status()
        bad = [{"user_id": USER, "region": SOURCE, "latency_ms": 250.0}] * 3
        client.post("/v1/probes", json={"probes": bad})
        _wait_for(lambda: (sessions[SOURCE].get(USER) or _Missing()).frozen, timeout_s=30)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 10  # shut down inside the hour-long copy wait
    # a frozen session waits for the next start's recovery, still in one place only
    assert sessions[SOURCE].get(USER) is not None and sessions[TARGET].get(USER) is None
    sessions.close()
    manager.ledger.dispose()


class _Missing:
    frozen = False


def _settled(client: httpx.Client) -> dict[str, Any] | None:
    route = client.get(f"/v1/routes/{USER}").json()
    return route if route["pending_switchover"] is None and route["region"] == TARGET else None


def _wait_for(check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout_s} s")


def test_a_standby_executor_waits_for_the_lease_and_takes_over_when_the_first_stops(
    fast: Settings,
) -> None:
    store = SqliteRouterStore(fast.serving_dir / fast.router.sqlite_file, 10)
    first, standby = MigrationLoop(fast, store), MigrationLoop(fast, store)

    def soon(condition) -> bool:
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        return condition()

    first.start()
    try:
        assert soon(lambda: first.holds_lease)
        standby.start()
        time.sleep(10 * fast.router.migration_poll_s)
        assert not standby.holds_lease
        first.stop()
        assert not first.holds_lease
        assert soon(lambda: standby.holds_lease)
    finally:
        first.stop()
        standby.stop()
        store.close()
