"""Shared pieces of the provisioning tests: a simulated time, plans, a PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from core.regions import load_regions
from core.settings import PACKAGED_REGIONS_FILE, Settings, get_settings
from serving.provisioning.clock import ManualClock
from serving.provisioning.ledger import Ledger
from serving.provisioning.local import LocalProvider
from serving.provisioning.manager import PreAllocationManager
from tests.serving.provisioning.aws_moto import moto_ec2, moto_server  # noqa: F401 (fixtures)

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def plan_frame(
    rows: int,
    *,
    regions: tuple[str, ...] = ("aws-us-east-1",),
    start: datetime = T0 + timedelta(hours=1),
    cpu_cores: float = 4.0,
    ram_gb: float = 16.0,
    storage_iops: float = 3000.0,
    network_mbps: float = 100.0,
    user_prefix: str = "user",
) -> pd.DataFrame:
    """A placement plan of ``rows`` pre-allocations (users cycled over ``regions``)."""
    return pd.DataFrame(
        {
            "user_id": [f"{user_prefix}-{i:03d}" for i in range(rows)],
            "window_start": pd.Timestamp(start),
            "window_end": pd.Timestamp(start + timedelta(hours=2)),
            "current_region": "aws-us-east-1",
            "region": [regions[i % len(regions)] for i in range(rows)],
            "cpu_cores": cpu_cores,
            "ram_gb": ram_gb,
            "storage_iops": storage_iops,
            "network_mbps": network_mbps,
            "action": "preallocate",
            "reason": "test plan",
        }
    )


def build_manager(settings: Settings, clock: ManualClock) -> PreAllocationManager:
    """A manager over the configured ledger and the local cloud, driven by ``clock``."""
    return PreAllocationManager(
        Ledger.from_settings(settings), LocalProvider.from_settings(settings, clock), settings
    )


def with_provisioning(settings: Settings, **fields: object) -> Settings:
    """``settings`` with some provisioning fields changed."""
    provisioning = settings.provisioning.model_copy(update=fields)
    return settings.model_copy(update={"provisioning": provisioning})


def write_regions(path: Path, capacity_vcpu: float) -> Path:
    """A copy of the packaged catalogue with every region's vCPU capacity set to one value."""
    frame = load_regions(PACKAGED_REGIONS_FILE).to_frame()
    frame["capacity_vcpu"] = capacity_vcpu
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def clock() -> ManualClock:
    """Simulated time, starting at T0."""
    return ManualClock(T0)


@pytest.fixture
def settings() -> Settings:
    """This test's settings (its own PREWARM_HOME)."""
    return get_settings()


@pytest.fixture
def manager(settings: Settings, clock: ManualClock) -> Iterator[PreAllocationManager]:
    """A manager on the embedded default: SQLite ledger, local cloud."""
    built = build_manager(settings, clock)
    yield built
    built.ledger.dispose()
    built.provider.dispose()
