"""The router service follows its switchover intents and the migration journal's routes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from core.settings import Settings
from serving.router.migration_journal import MigrationJournal
from serving.router.models import Probe
from serving.router.service import RouterService
from serving.router.sqlite_store import SqliteRouterStore
from tests.serving.router.conftest import EAST, WEST, allocation, config

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


@pytest.fixture
def parts(
    settings: Settings,
) -> Iterator[tuple[RouterService, SqliteRouterStore, MigrationJournal]]:
    store = SqliteRouterStore(settings.serving_dir / "router.sqlite", rejections_kept=0)
    journal = MigrationJournal.from_settings(settings)
    service = RouterService(store, settings, lambda: T0, journal)
    service.push_config(config(1, allocation("u1", EAST, current=WEST), cooldown_s=0))
    yield service, store, journal
    store.close()
    journal.dispose()


def slow_probes() -> list[Probe]:
    return [Probe(user_id="u1", region=WEST, latency_ms=300.0)] * 3


def test_a_recorded_intent_moves_nobody_until_the_journal_says_so(parts) -> None:
    service, store, journal = parts
    first = service.handle_probes(slow_probes()).decisions[0]
    assert (first.action, first.intent_id) == ("switch", "u1#1")
    assert service.route("u1").region == WEST

    assert store.transition_intent("u1#1", "pending", "executing", T0)
    journal.place("u1", EAST, T0)  # what the redirect step leaves in the journal
    view = service.route("u1")
    assert (view.region, view.pending_switchover.status) == (EAST, "executing")
    during = service.handle_probes(slow_probes()).decisions[0]
    assert (during.action, during.code, during.region) == ("stay", "switchover_in_flight", EAST)

    assert store.transition_intent("u1#1", "executing", "done", T0, step="released")
    after = service.handle_probes(slow_probes()).decisions[0]
    assert (after.action, after.code, after.region) == ("stay", "at_target", EAST)
    assert store.routes(["u1"])["u1"].pending_intent is None


def test_a_failed_intent_leaves_the_user_where_they_were_and_free_to_switch_again(parts) -> None:
    service, store, _ = parts
    service.handle_probes(slow_probes())
    assert store.transition_intent("u1#1", "pending", "executing", T0)
    assert store.transition_intent(
        "u1#1", "executing", "failed", T0, step="rolled_back: no session in the source region"
    )
    view = service.route("u1")
    assert (view.region, view.pending_switchover) == (WEST, None)
    assert "failed (rolled_back: no session" in view.reason
    retry = service.handle_probes(slow_probes()).decisions[0]
    assert (retry.action, retry.intent_id, retry.from_region) == ("switch", "u1#2", WEST)
