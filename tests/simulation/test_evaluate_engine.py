"""The engine applies the same delays to every policy: cold boots, warm moves, scaling up."""

from __future__ import annotations

import numpy as np
import pytest

from core.latency import LatencyModel
from core.settings import Settings
from simulation.eval_engine import Engine
from simulation.eval_policy import NO_REGION, Decision, Observed, PolicyContext
from simulation.eval_record import record_world
from simulation.evaluate import _context
from simulation.world import World, WorldConfig

USERS = 3


class Scripted:
    """A policy following a fixed script: home, then one region change or resize at step 1."""

    name = "scripted"

    def __init__(self, context: PolicyContext, move: bool, warm: bool, grow: bool) -> None:
        self.context, self.move, self.warm, self.grow = context, move, warm, grow
        self.far = (context.home_region + 1) % len(context.catalogue)

    def decide(self, step: int, observed: Observed) -> Decision:
        after = step - self.context.first_step >= 1
        region = np.where(after and self.move, self.far, self.context.home_region)
        allocation = np.zeros((USERS, 2))
        allocation[:, 0] = 2.0 if (after and self.grow) else 1.0
        before = step - self.context.first_step == 0
        warm_region = np.where(before and self.warm, self.far, NO_REGION)
        warm_allocation = np.zeros((USERS, 2))
        warm_allocation[:, 0] = 1.0 if self.warm else 0.0
        return Decision(region, allocation, warm_region, warm_allocation)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    settings = Settings(home=tmp_path_factory.mktemp("engine-home"))
    settings = settings.model_copy(
        update={"evaluation": settings.evaluation.model_copy(update={"train_days": 1})}
    )
    world = World(WorldConfig(users=USERS, days=2, seed=9), settings)
    latency = LatencyModel(settings.latency)
    record = record_world(world, latency)
    return Engine(_context(world, record, latency, settings, 1), record, settings)


def _run(engine: Engine, **script: bool) -> dict[str, float]:
    return engine.run(Scripted(engine.context, **script))


def test_a_cold_move_keeps_booting_capacity_idle_for_the_boot_and_copy(engine: Engine) -> None:
    result = _run(engine, move=True, warm=False, grow=False)
    ticks = np.ceil((engine.boot_s + engine.copy_s) / engine.tick_s)
    assert result["migrations"] == USERS
    assert result["idle_warm_resource_hours"] == pytest.approx(USERS * ticks * engine.tick_s / 3600)


def test_a_move_into_ready_warm_capacity_waits_only_for_the_copy(engine: Engine) -> None:
    result = _run(engine, move=True, warm=True, grow=False)
    held_ticks = engine.ticks + np.ceil(engine.copy_s / engine.tick_s)
    assert result["migrations"] == USERS
    assert result["idle_warm_resource_hours"] == pytest.approx(
        USERS * held_ticks * engine.tick_s / 3600
    )


def test_growing_in_place_takes_the_scale_up_delay(engine: Engine) -> None:
    steady = _run(engine, move=False, warm=False, grow=False)
    grown = _run(engine, move=False, warm=False, grow=True)
    steps = engine.record.n_steps - engine.context.first_step
    late_ticks = np.ceil(engine.scale_s / engine.tick_s)
    extra_ticks = (steps - 1) * engine.ticks - late_ticks
    assert grown["served_resource_hours"] - steady["served_resource_hours"] == pytest.approx(
        USERS * extra_ticks * engine.tick_s / 3600
    )
    assert grown["migrations"] == steady["migrations"] == 0
