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


def test_a_cold_move_boots_copies_and_scales_before_the_user_is_served_there(
    engine: Engine,
) -> None:
    result = _run(engine, move=True, warm=False, grow=False)
    boot_s = engine.settings.provisioning.cold_boot_seconds  # the local provider's boot
    ticks = np.ceil((boot_s + engine.copy_s + engine.scale_s) / engine.tick_s)
    assert result["migrations"] == USERS
    assert result["idle_warm_resource_hours"] == pytest.approx(USERS * ticks * engine.tick_s / 3600)
    assert result["reservations_requested"] == result["reservations_activated"] == USERS
    assert result["reservations_released_at_end"] == USERS
    assert result["orphaned_resources"] == 0


def test_a_move_into_ready_warm_capacity_waits_only_for_the_copy_and_scale_up(
    engine: Engine,
) -> None:
    result = _run(engine, move=True, warm=True, grow=False)
    # The hold holds its warm fraction for the step before the move, then the move's
    # allocation is held, not yet served, while the state is copied and the hold scaled up.
    warm_ticks = engine.warm_fraction * engine.ticks
    moving_ticks = np.ceil((engine.copy_s + engine.scale_s) / engine.tick_s)
    assert result["migrations"] == USERS
    assert result["idle_warm_resource_hours"] == pytest.approx(
        USERS * (warm_ticks + moving_ticks) * engine.tick_s / 3600
    )
    assert result["reservations_requested"] == result["reservations_activated"] == USERS


class HoldingAway:
    """Holds warm in a far region at every step and never moves there."""

    name = "holding-away"

    def __init__(self, context: PolicyContext) -> None:
        self.context = context
        self.far = (context.home_region + 1) % len(context.catalogue)

    def decide(self, step: int, observed: Observed) -> Decision:
        allocation = np.ones((USERS, 2))
        return Decision(self.context.home_region.copy(), allocation, self.far, allocation.copy())


def test_a_hold_unused_for_the_ttl_expires_and_is_requested_anew(engine: Engine) -> None:
    result = engine.run(HoldingAway(engine.context))
    steps = engine.record.n_steps - engine.context.first_step
    hours = steps * engine.interval_s / 3600
    lives = int(np.ceil(hours / engine.settings.provisioning.ttl_hours))
    assert result["reservations_requested"] == USERS * lives
    assert result["reservations_expired"] == USERS * (lives - 1)
    assert result["reservations_released_at_end"] == USERS
    assert result["orphaned_resources"] == 0


def test_a_warm_budget_of_nothing_refuses_every_hold_and_every_move(engine: Engine) -> None:
    settings = engine.settings
    broke = settings.model_copy(
        update={"provisioning": settings.provisioning.model_copy(update={"budget_usd_per_hour": 0})}
    )
    result = Engine(engine.context, engine.record, broke).run(
        Scripted(engine.context, move=True, warm=True, grow=False)
    )
    assert result["migrations"] == 0
    assert result["idle_warm_resource_hours"] == 0
    assert result["reservations_requested"] == 0
    assert result["reservations_refused_over_budget"] > 0


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
