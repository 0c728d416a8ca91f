"""From a placement plan to a routing config: one allocation per user, the window in force."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from serving.router.plan_config import config_from_plan
from tests.serving.router.conftest import EAST, EUROPE, WEST

NOW = datetime(2026, 1, 5, 12, 30, tzinfo=UTC)


def plan_row(user: str, start: str, end: str, region: str, **extra) -> dict:
    return {
        "user_id": user, "window_start": pd.Timestamp(start, tz="UTC"),
        "window_end": pd.Timestamp(end, tz="UTC"), "current_region": WEST, "region": region,
        "cpu_cores": 2, "ram_gb": 4.0, "storage_iops": 300.0, "network_mbps": 50.0,
        "location_probability": 0.8, "expected_latency_ms": 25.0, "action": "preallocate",
        "reason": "test", **extra,
    }  # fmt: skip


def test_each_user_gets_the_window_in_force_or_the_next_one() -> None:
    plan = pd.DataFrame([
        plan_row("u1", "2026-01-05 10:00", "2026-01-05 12:00", EUROPE),  # over
        plan_row("u1", "2026-01-05 12:00", "2026-01-05 14:00", EAST),  # in force
        plan_row("u1", "2026-01-05 14:00", "2026-01-05 16:00", EUROPE),  # next
        plan_row("u2", "2026-01-05 14:00", "2026-01-05 16:00", EAST,
                 expected_latency_ms=float("nan")),  # only a future window
        plan_row("u3", "2026-01-05 08:00", "2026-01-05 10:00", EAST),  # all over
    ])  # fmt: skip
    routing = config_from_plan(plan, version=7, now=NOW)
    assert routing.version == 7
    by_user = {a.user_id: a for a in routing.users}
    assert set(by_user) == {"u1", "u2"}
    assert by_user["u1"].region == EAST and by_user["u1"].current_region == WEST
    assert by_user["u1"].window_start == datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert by_user["u1"].cpu_cores == 2.0
    assert by_user["u2"].expected_latency_ms is None


def test_a_plan_missing_columns_or_with_bad_values_is_refused() -> None:
    with pytest.raises(ValueError, match="region"):
        config_from_plan(pd.DataFrame([{"user_id": "u1"}]), version=1, now=NOW)
    bad = pd.DataFrame([plan_row("u1", "2026-01-05 12:00", "2026-01-05 14:00", EAST,
                                 cpu_cores=-1.0)])  # fmt: skip
    with pytest.raises(ValueError, match="cpu_cores"):
        config_from_plan(bad, version=1, now=NOW)
