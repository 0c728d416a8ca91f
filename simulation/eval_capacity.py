"""Region capacity in the closed loop: the part of a decision the regions have room for.

Every interval, before the engine applies a decision, each request that needs vCPU in a region
is granted only if the region has it free. Free vCPU in a region is its ``capacity_vcpu`` times
``1 - background load`` at that step, less what this policy's users hold there: serving
allocations (an in-place scale-up under way counts at its target), pending moves and warm holds.
What a user gives up in the same decision whatever is granted (a shrink, a cancelled or
replaced move, a warm hold it no longer asks for) is freed first.

Requests are granted in three phases, each in user index order, a request that does not fit
being refused and the next one tried (first fit): moves, then warm holds, then growth in place.

- a new move needs its whole allocation in the target region (less the warm hold it consumes
  there); refused, the user stays where they are with no move under way and asks in place for
  the allocation it asked for, granted like any growth;
- growing the allocation of a move under way needs the added vCPU; refused, the move keeps the
  allocation it had;
- a new warm hold needs its allocation, a larger one the added vCPU; refused, a new hold holds
  nothing and a grown one keeps what it held;
- growth in place needs the added vCPU; refused, the vCPU allocation stays what the user holds
  (no partial growth).

Requests are all or nothing and only vCPU is bound: memory is granted as asked. Holdings are
never taken back: a region whose background load rises above what is held keeps its users, but
grants nothing more until it has room again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from simulation.eval_policy import NO_REGION, Decision

if TYPE_CHECKING:
    from simulation.eval_engine import ServingState

EPSILON_VCPU = 1e-9


@dataclass
class Refusals:
    """Requests refused for capacity, summed over the evaluation."""

    moves: int = 0
    warm_holds: int = 0
    growth: int = 0

    def total(self) -> int:
        """Every refused request."""
        return self.moves + self.warm_holds + self.growth


class FreeCapacity:
    """Free vCPU per region, consumed as requests are granted."""

    def __init__(self, free: np.ndarray) -> None:
        self.free = free.astype(np.float64).copy()

    def release(self, regions: np.ndarray, vcpu: np.ndarray) -> None:
        """Give ``vcpu`` back to ``regions`` (arrays of the same length)."""
        self.free += np.bincount(regions, vcpu, minlength=len(self.free))

    def grant(self, regions: np.ndarray, delta: np.ndarray, asking: np.ndarray) -> np.ndarray:
        """Which of the ``asking`` users get ``delta`` more vCPU in ``regions`` (all per user).

        Non-positive deltas are releases, always granted and freed first; the others are granted
        in user index order while they fit. Regions where every request fits skip the loop.
        """
        granted = np.zeros(len(asking), dtype=bool)
        users = np.flatnonzero(asking)
        where, amount = regions[users], delta[users]
        releases = amount <= 0
        granted[users[releases]] = True
        self.release(where[releases], -amount[releases])
        users, where, amount = users[~releases], where[~releases], amount[~releases]
        asked = np.bincount(where, amount, minlength=len(self.free))
        fits = (asked <= self.free + EPSILON_VCPU)[where]
        granted[users[fits]] = True
        self.free -= np.bincount(where[fits], amount[fits], minlength=len(self.free))
        for user, region, vcpu in zip(users[~fits], where[~fits], amount[~fits], strict=True):
            if vcpu <= self.free[region] + EPSILON_VCPU:
                granted[user] = True
                self.free[region] -= vcpu
        return granted


def held_vcpu(state: ServingState, regions: int) -> np.ndarray:
    """(regions,) vCPU held by the state: serving (at its scale target), pending and warm."""
    held = np.bincount(state.region, state.scale_target[:, 0], minlength=regions)
    for where, amount in (
        (state.pending_region, state.pending_allocation[:, 0]),
        (state.warm_region, state.warm_allocation[:, 0]),
    ):
        mask = where != NO_REGION
        held += np.bincount(where[mask], amount[mask], minlength=regions)
    return held


@dataclass(frozen=True)
class _Requests:
    """One decision read against the state: what each user holds and asks (vCPU arrays)."""

    target: np.ndarray
    ask: np.ndarray
    warm_to: np.ndarray
    warm_ask: np.ndarray
    serving: np.ndarray  # held where the user is served (its scale target)
    pending: np.ndarray
    warm: np.ndarray
    stay: np.ndarray
    retarget: np.ndarray
    new_move: np.ndarray
    into_warm: np.ndarray

    @classmethod
    def read(cls, state: ServingState, decision: Decision) -> _Requests:
        target = decision.region.astype(np.int64)
        stay = target == state.region
        retarget = ~stay & (target == state.pending_region)
        new_move = ~stay & ~retarget
        return cls(
            target=target,
            ask=decision.allocation[:, 0].astype(np.float64),
            warm_to=decision.warm_region.astype(np.int64),
            warm_ask=decision.warm_allocation[:, 0].astype(np.float64),
            serving=state.scale_target[:, 0].copy(),
            pending=state.pending_allocation[:, 0].copy(),
            warm=state.warm_allocation[:, 0].copy(),
            stay=stay,
            retarget=retarget,
            new_move=new_move,
            into_warm=new_move & (state.warm_region == target),
        )

    def kept(self, state: ServingState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What each user keeps whatever is granted: serving, pending and warm vCPU."""
        serving = np.where(self.stay, np.minimum(self.serving, self.ask), self.serving)
        pending = np.where(self.retarget, np.minimum(self.pending, self.ask), 0.0)
        same_warm = (state.warm_region != NO_REGION) & (self.warm_to == state.warm_region)
        warm = np.where(
            self.into_warm,
            self.warm,
            np.where(same_warm, np.minimum(self.warm, self.warm_ask), 0.0),
        )
        return serving, pending, warm


def grant(
    state: ServingState, decision: Decision, available: np.ndarray, refusals: Refusals
) -> Decision:
    """The part of ``decision`` that fits in ``available`` vCPU per region (module docstring).

    ``available`` is each region's capacity left by its background load; ``refusals`` is
    incremented by what was refused.
    """
    asked = _Requests.read(state, decision)
    kept_serving, kept_pending, kept_warm = asked.kept(state)
    held = np.bincount(state.region, kept_serving, minlength=len(available))
    for where, amount in ((state.pending_region, kept_pending), (state.warm_region, kept_warm)):
        mask = where != NO_REGION
        held += np.bincount(where[mask], amount[mask], minlength=len(available))
    free = FreeCapacity(available - held)
    region, allocation, moved = _grant_moves(state, decision, asked, free, refusals)
    warm_region, warm_allocation = _grant_warm(
        state, decision, asked, moved, kept_warm, free, refusals
    )
    in_place = region == state.region
    growth = allocation[:, 0] - np.where(asked.stay, kept_serving, asked.serving)
    grown = free.grant(state.region, growth, in_place)
    refused = in_place & ~grown
    allocation[refused, 0] = asked.serving[refused]
    refusals.growth += int(refused.sum())
    return replace(
        decision,
        region=region,
        allocation=allocation,
        warm_region=warm_region,
        warm_allocation=warm_allocation,
    )


def _grant_moves(
    state: ServingState,
    decision: Decision,
    asked: _Requests,
    free: FreeCapacity,
    refusals: Refusals,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Granted serving regions and allocations, and which moves (new or resized) were granted."""
    delta = np.where(
        asked.into_warm,
        asked.ask - asked.warm,
        np.where(asked.retarget, np.maximum(asked.ask - asked.pending, 0.0), asked.ask),
    )
    moved = free.grant(asked.target, delta, ~asked.stay)
    refused_move = asked.new_move & ~moved
    refused_resize = asked.retarget & ~moved
    region = asked.target.copy()
    region[refused_move] = state.region[refused_move]
    allocation = decision.allocation.astype(np.float64).copy()
    allocation[refused_resize, 0] = asked.pending[refused_resize]
    refusals.moves += int(refused_move.sum())
    refusals.growth += int(refused_resize.sum())
    return region, allocation, moved


def _grant_warm(
    state: ServingState,
    decision: Decision,
    asked: _Requests,
    moved: np.ndarray,
    kept_warm: np.ndarray,
    free: FreeCapacity,
    refusals: Refusals,
) -> tuple[np.ndarray, np.ndarray]:
    """Granted warm regions and allocations, once the moves are known."""
    consumed = asked.into_warm & moved
    pending = np.where(asked.stay | (asked.new_move & ~moved), NO_REGION, asked.target)
    wanted = asked.warm_to.copy()
    wanted[(wanted == state.region) | (wanted == pending)] = NO_REGION
    current = np.where(consumed, NO_REGION, state.warm_region)
    held = np.where(consumed, 0.0, kept_warm)
    same = (current != NO_REGION) & (wanted == current)
    dropped = (current != NO_REGION) & ~same
    free.release(current[dropped], held[dropped])
    asking = wanted != NO_REGION
    kept = free.grant(wanted, np.where(same, asked.warm_ask - held, asked.warm_ask), asking)
    refused_new = asking & ~same & ~kept
    refused_growth = asking & same & ~kept
    warm_region = decision.warm_region.astype(np.int64).copy()
    warm_region[refused_new] = NO_REGION
    warm_allocation = decision.warm_allocation.astype(np.float64).copy()
    warm_allocation[refused_growth, 0] = held[refused_growth]
    refusals.warm_holds += int(refused_new.sum() + refused_growth.sum())
    return warm_region, warm_allocation
