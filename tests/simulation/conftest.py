"""Shared worlds for the simulation tests (built once per session: worlds are deterministic)."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from core.settings import PACKAGED_REGIONS_FILE, Settings
from simulation.world import World, WorldConfig


def with_simulation(settings: Settings, **changes: object) -> Settings:
    """A copy of ``settings`` with some simulation settings changed."""
    return settings.model_copy(
        update={"simulation": settings.simulation.model_copy(update=changes)}
    )


def capped_regions(home: Path, capped: dict[str, float]) -> Path:
    """A copy of the packaged catalogue under ``home`` whose ``capped`` regions have that
    capacity_vcpu (code -> vCPU): worlds where a region is full."""
    with PACKAGED_REGIONS_FILE.open() as source:
        rows = list(csv.DictReader(source))
    for row in rows:
        row["capacity_vcpu"] = str(capped.get(row["code"], row["capacity_vcpu"]))
    regions_file = home / "regions.csv"
    with regions_file.open("w", newline="") as target:
        writer = csv.DictWriter(target, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return regions_file


@pytest.fixture(scope="session")
def sim_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose cache (the geolocated IP pool) all simulation tests share."""
    return Settings(home=tmp_path_factory.mktemp("simulation-home"))


@pytest.fixture(scope="session")
def small_world(sim_settings: Settings) -> World:
    """150 users over one week (Monday to Sunday)."""
    return World(WorldConfig(users=150, days=7, seed=11), sim_settings)


@pytest.fixture(scope="session")
def small_frame(small_world: World) -> pd.DataFrame:
    """The telemetry of the whole small world."""
    return small_world.telemetry()
