"""The serving policies the closed-loop evaluation compares (see ``simulation.evaluate``).

- ``static``: every user stays in their home region, allocated their historical p95 + headroom;
- ``reactive``: a competent reactive autoscaler: two consecutive intervals of measured latency
  above the SLO move the user (cold) to the region with the lowest probed latency that has
  capacity; allocations are the p95 of the last 24 hours' usage + headroom, scaled up in place
  when demand exceeds them;
- ``oracle``: perfect knowledge of future position and demand, paying the same delays: it holds
  warm capacity a boot ahead of each move; it sizes each hour with the same rule as the others,
  on the TRUE demand instead of a forecast or the past (the ``allocation_quantile`` of the
  hour's active demand, plus the placement headroom), and grows ahead of any interval whose
  demand exceeds that, so that it never leaves demand unmet. It plans within region capacity
  (:class:`OracleLedger`): the engine refuses what a full region has no room for, and the
  oracle, knowing every region's future load, never asks for it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.latency import great_circle_km
from serving.router.migration import copy_seconds
from simulation.eval_capacity import FreeCapacity
from simulation.eval_engine import lead_steps
from simulation.eval_policy import (
    NO_REGION,
    RESOURCES,
    Decision,
    Observed,
    PolicyContext,
    active_quantile,
)
from simulation.eval_record import WorldRecord, expected_latency
from simulation.predictive import PredictivePolicy


def _no_warm(n_users: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n_users, NO_REGION, dtype=np.int64), np.zeros((n_users, len(RESOURCES)))


class StaticPolicy:
    """Home region, allocation at the training range's p95 of active demand + headroom."""

    name = "static"

    def __init__(self, context: PolicyContext) -> None:
        self.context = context
        self.allocation: np.ndarray | None = None

    def decide(self, step: int, observed: Observed) -> Decision:
        """The same decision at every step, sized once from the history before evaluation."""
        if self.allocation is None:
            quantile = self.context.settings.evaluation.allocation_quantile
            headroom = 1.0 + self.context.settings.placement.headroom
            p95 = active_quantile(observed.demand, observed.session_active, quantile)
            self.allocation = p95 * headroom
        warm_region, warm_allocation = _no_warm(len(self.context.home_region))
        return Decision(
            self.context.home_region.copy(), self.allocation, warm_region, warm_allocation
        )


class ReactivePolicy:
    """Follows measured latency and usage after the fact (see the module docstring)."""

    name = "reactive"

    def __init__(self, context: PolicyContext) -> None:
        self.context = context
        settings = context.settings
        self.threshold_ms = settings.latency_slo_ms
        self.consecutive = settings.evaluation.reactive_consecutive_intervals
        self.headroom = 1.0 + settings.placement.headroom
        self.window = settings.evaluation.reactive_window_hours * context.steps_per_hour
        self.quantile = settings.evaluation.allocation_quantile
        self.target: np.ndarray | None = None
        self.allocation: np.ndarray | None = None

    def decide(self, step: int, observed: Observed) -> Decision:
        """Move users whose latency stayed above threshold; size to recent usage, grow on demand.

        The size is recomputed hourly from the last 24 hours; a scale-up holds until then.
        """
        if self.target is None:
            self.target = observed.region.copy()
        if (
            self.allocation is None
            or (step - self.context.first_step) % self.context.steps_per_hour == 0
        ):
            recent = slice(max(0, step - self.window), step)
            self.allocation = self.headroom * active_quantile(
                observed.demand[:, recent], observed.session_active[:, recent], self.quantile
            )
        last = observed.demand[:, -1]
        short = np.any(last > observed.allocation, axis=1)
        self.allocation[short] = np.maximum(self.allocation[short], last[short] * self.headroom)
        allocation = self.allocation.copy()
        self._move(observed, allocation)
        warm_region, warm_allocation = _no_warm(len(self.target))
        return Decision(self.target.copy(), allocation, warm_region, warm_allocation)

    def _move(self, observed: Observed, allocation: np.ndarray) -> None:
        recent = observed.latency_ms[:, -self.consecutive :]
        slow = (recent.shape[1] == self.consecutive) & np.all(recent > self.threshold_ms, axis=1)
        for user in np.flatnonzero(slow):
            position = _last_position(observed, user)
            if position is None:
                continue
            probes = self._probes(position, observed.step)
            room = observed.free_vcpu >= allocation[user, 0]
            probes[~room] = np.inf
            best = int(np.argmin(probes))
            if np.isfinite(probes[best]) and best != observed.region[user]:
                self.target[user] = best

    def _probes(self, position: tuple[float, float], step: int) -> np.ndarray:
        """Latency a client at ``position`` measures to every region (its probes)."""
        catalogue = self.context.catalogue
        distance = great_circle_km(position[0], position[1], catalogue.lat, catalogue.lon)
        load = self.context.utilisation[min(step, len(self.context.utilisation) - 1)]
        return self.context.latency.expected_ms(distance, load)


def _last_position(observed: Observed, user: int) -> tuple[float, float] | None:
    known = np.flatnonzero(np.isfinite(observed.lat[user]))
    if known.size == 0:
        return None
    last = known[-1]
    return float(observed.lat[user, last]), float(observed.lon[user, last])


class OraclePolicy:
    """Knows every user's true future position and demand; pays the same delays and prices."""

    name = "oracle"

    def __init__(self, context: PolicyContext, record: WorldRecord) -> None:
        self.context = context
        self.record = record
        interval = context.interval_seconds
        self.boot_lead = lead_steps(context.settings.provisioning.cold_boot_seconds, interval) + 1
        self.sized = self._hourly_size()
        self.wanted = self._plan_regions()

    def _hourly_size(self) -> np.ndarray:
        """(users, steps, resources): each clock hour's quantile of true active demand + headroom.

        The hours are counted from the start of the evaluation range, like every policy's.
        """
        record, context = self.record, self.context
        settings = context.settings
        per_hour = context.steps_per_hour
        first = context.first_step
        sized = np.zeros_like(record.demand)
        for start in range(first, record.n_steps, per_hour):
            hour = slice(start, min(start + per_hour, record.n_steps))
            size = active_quantile(
                record.demand[:, hour], record.session_active[:, hour],
                settings.evaluation.allocation_quantile,
            )  # fmt: skip
            sized[:, hour] = (1.0 + settings.placement.headroom) * size[:, None, :]
        return np.maximum(record.demand, sized)

    def _plan_regions(self) -> np.ndarray:
        """Region per user and step: stay while under the SLO, else the lowest-latency region,
        switching as early as that does no harm; all within what each region has room for."""
        record, context = self.record, self.context
        slo = context.settings.latency_slo_ms
        ledger = OracleLedger(context, self.boot_lead, self.sized[..., 0].max(axis=1))
        all_regions = np.arange(len(context.catalogue))[None, :].repeat(record.n_users, axis=0)
        wanted = np.empty((record.n_users, record.n_steps), dtype=np.int64)
        current = context.home_region.astype(np.int64).copy()
        for step in range(record.n_steps):
            latency = expected_latency(
                record, context.latency, context.catalogue.lat, context.catalogue.lon, step,
                all_regions,
            )  # fmt: skip
            here = latency[np.arange(record.n_users), current]
            move = record.session_active[:, step] & (here > slo)
            desired = np.where(move, np.argmin(latency, axis=1), current)
            current = ledger.place(step, current, desired, latency)
            wanted[:, step] = current
        # Move early wherever the next region already serves under the SLO (or nobody is
        # served) and has room for the earlier warm hold: the state copy then completes before
        # the old region's latency is needed.
        for step in range(record.n_steps - 2, -1, -1):
            following = wanted[:, step + 1]
            change = following != wanted[:, step]
            if not change.any():
                continue
            latency = expected_latency(
                record, context.latency, context.catalogue.lat, context.catalogue.lon, step,
                following,
            )  # fmt: skip
            harmless = change & ((latency <= slo) | ~record.session_active[:, step])
            harmless = ledger.move_earlier(step, following, harmless)
            wanted[harmless, step] = following[harmless]
        return wanted

    def decide(self, step: int, observed: Observed) -> Decision:
        """Serve where needed now; hold warm where needed a boot from now; size on true demand."""
        last = self.record.n_steps - 1
        demand = self.sized
        region = self.wanted[:, step]
        allocation = np.maximum(demand[:, step], demand[:, min(step + 1, last)])
        ahead = min(step + self.boot_lead, last)
        upcoming = self.wanted[:, step + 1 : ahead + 1]
        if upcoming.shape[1] == 0:
            upcoming = region[:, None]
        moves = upcoming != region[:, None]
        has_move = moves.any(axis=1)
        first_move = np.argmax(moves, axis=1)
        users = np.arange(len(region))
        warm_region = np.where(has_move, upcoming[users, first_move], NO_REGION)
        at = np.minimum(step + 1 + first_move, last)
        warm_allocation = np.maximum(demand[users, at], demand[users, np.minimum(at + 1, last)])
        warm_allocation = np.where(has_move[:, None], warm_allocation, 0.0)
        return Decision(region.copy(), allocation, warm_region.astype(np.int64), warm_allocation)


class OracleLedger:
    """vCPU the oracle's plan reserves per step and region, against what the regions have free.

    Every user reserves its peak sized vCPU (so that whatever the engine holds for it, serving,
    a move under way or a warm hold, is covered): at each step in the region it was served from
    the step before, and, when it moves at step ``s`` to a region, there over the warm hold's
    lead ``[s - boot_lead, s]``. A user stays while its region has room until its next chance
    to leave has completed; otherwise, and when latency calls for a move, it goes to the
    lowest-latency region with room over the whole hold (users in index order, first fit).
    """

    def __init__(self, context: PolicyContext, boot_lead: int, peak_vcpu: np.ndarray) -> None:
        settings = context.settings
        capacity = np.array([r.capacity_vcpu for r in context.catalogue], dtype=np.float64)
        self.available = capacity[None, :] * (1.0 - context.utilisation)  # (steps, regions)
        self.used = np.zeros_like(self.available)
        self.boot_lead = boot_lead
        moving = (
            settings.provisioning.cold_boot_seconds
            + copy_seconds(settings.evaluation.session_bytes, settings.router)
            + settings.provisioning.scale_up_seconds
        )
        self.pending_steps = max(1, lead_steps(moving, context.interval_seconds))
        self.peak = peak_vcpu

    def _window(self, step: int, before: int, after: int) -> slice:
        return slice(max(0, step - before), min(len(self.available), step + after + 1))

    def place(
        self, step: int, previous: np.ndarray, desired: np.ndarray, latency: np.ndarray
    ) -> np.ndarray:
        """Regions at ``step`` (users,): ``desired`` where it has room, reserved in the ledger."""
        ahead = self._window(step, 0, self.pending_steps)
        room = self.available[ahead].min(axis=0) - self.used[step]
        stay = desired == previous
        kept = FreeCapacity(room).grant(previous, self.peak, stay)
        self.used[step] += np.bincount(previous, self.peak, minlength=self.used.shape[1])
        placed = previous.copy()
        for user in np.flatnonzero(~kept):
            for region in np.argsort(latency[user], kind="stable"):
                if region == previous[user]:
                    if stay[user]:
                        continue  # no room to stay: it has to leave
                    break  # no lower-latency region has room: it stays
                if self._move_fits(step, int(region), self.peak[user]):
                    self._reserve_move(step, int(region), int(previous[user]), self.peak[user])
                    placed[user] = region
                    break
        return placed

    def _move_fits(self, step: int, region: int, vcpu: float) -> bool:
        held = self._window(step, self.boot_lead, 0)
        room = self.available[held, region] - self.used[held, region]
        ahead = self._window(step, 0, self.pending_steps)
        later = self.available[ahead, region].min() - self.used[step, region]
        return bool(vcpu <= min(room.min(), later))

    def _reserve_move(self, step: int, region: int, previous: int, vcpu: float) -> None:
        self.used[self._window(step, self.boot_lead, 0), region] += vcpu
        self.used[step + 1 : step + self.pending_steps, previous] += vcpu

    def move_earlier(self, step: int, following: np.ndarray, asking: np.ndarray) -> np.ndarray:
        """Which of ``asking`` can move to ``following`` one step earlier, at ``step + 1`` -> step:
        the warm hold then starts a step earlier too, at ``step - boot_lead``."""
        start = step - self.boot_lead
        if start < 0:
            return asking
        free = FreeCapacity(self.available[start] - self.used[start])
        granted = free.grant(following, self.peak, asking)
        self.used[start] = self.available[start] - free.free
        return granted


PolicyFactory = Callable[[PolicyContext, WorldRecord], object]

POLICIES: dict[str, PolicyFactory] = {
    "static": lambda context, _record: StaticPolicy(context),
    "reactive": lambda context, _record: ReactivePolicy(context),
    "predictive": lambda context, record: PredictivePolicy(context, record.n_steps),
    "oracle": OraclePolicy,
}
