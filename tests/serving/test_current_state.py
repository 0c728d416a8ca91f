"""Free capacity per region for the next plan: the catalogue, less background load and holds."""

from __future__ import annotations

import pytest

from core.settings import get_settings
from serving.current_state import remaining_capacity
from serving.provisioning.clock import ManualClock
from tests.serving.provisioning.conftest import T0, build_manager, plan_frame


def test_live_reservations_take_their_held_capacity_off_their_region() -> None:
    settings = get_settings()
    before = remaining_capacity(T0, settings).set_index("region")
    manager = build_manager(settings, ManualClock(T0))
    outcomes = manager.request_batch(plan_frame(3, cpu_cores=8.0, ram_gb=32.0), T0).outcomes
    manager.ledger.dispose()
    manager.provider.dispose()
    assert (outcomes["outcome"] == "created").all()

    after = remaining_capacity(T0, settings).set_index("region")

    held = 3 * 8.0 * settings.provisioning.warm_fraction
    taken = before.loc["aws-us-east-1", "cpu_cores"] - after.loc["aws-us-east-1", "cpu_cores"]
    assert taken == pytest.approx(held)
    others = after.index != "aws-us-east-1"
    assert (after.loc[others, "cpu_cores"] == before.loc[others, "cpu_cores"]).all()
