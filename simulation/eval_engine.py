"""The closed loop: a policy decides, the engine applies its decisions with real delays, and
every user-minute is accounted against the TRUE position and demand.

Warm holds and moves go through the real Pre-Allocation Manager, its ledger and the local
provider, on the simulated clock (``simulation.eval_provisioning``). Delays, the same for every
policy (settings.provisioning and settings.router):

- a warm hold is ready ``cold_boot_seconds`` after it is asked for, and holds
  ``warm_fraction`` of the allocation asked until it is used; one unused for ``ttl_hours``
  expires;
- moving a user to a region without a warm hold provisions one cold there
  (``cold_boot_seconds``); once the hold there is ready the session state is copied
  (``copy_seconds``) and the hold scaled to the full allocation (``scale_up_seconds``);
  meanwhile the user is served from the old region with the old allocation, and once moved the
  old region's reservation is released;
- growing an allocation in place takes ``scale_up_seconds``; shrinking is immediate.

Capacity binds (``simulation.eval_capacity``): before a decision is applied, each new move, new
or larger warm hold and growth (in place or of a move under way) is granted only if its region
has the vCPU free (``capacity_vcpu`` less the background load at that step, less what this
policy's users already hold there), in user index order, first fit; what does not fit is
refused and counted (``capacity_refusals``). The first decision, which puts the already running
system in place at once, is granted the same way from nothing held: a user refused there starts
without vCPU.

Time inside an interval is accounted at ``settings.evaluation.accounting_seconds`` resolution: a
sub-interval is served by the new region or allocation once the change completed at its start.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from core.settings import Settings
from serving.router.migration import copy_seconds
from simulation.eval_capacity import Refusals, grant, held_vcpu
from simulation.eval_metrics import MetricsAccumulator
from simulation.eval_policy import NO_REGION, RESOURCES, Decision, Observed, Policy, PolicyContext
from simulation.eval_provisioning import Provisioning
from simulation.eval_record import WorldRecord, expected_latency
from simulation.eval_trace import PolicyTrace


@dataclass
class ServingState:
    """Where each user is served, with what, and the changes under way (arrays per user)."""

    region: np.ndarray
    allocation: np.ndarray
    pending_region: np.ndarray  # NO_REGION: no migration under way
    pending_allocation: np.ndarray
    pending_ready_s: np.ndarray
    scale_target: np.ndarray
    scale_ready_s: np.ndarray  # inf: no scale-up under way
    warm_region: np.ndarray
    warm_allocation: np.ndarray
    warm_ready_s: np.ndarray

    @classmethod
    def start(cls, decision: Decision) -> ServingState:
        """The state the first decision puts in place (the system is assumed already running)."""
        n = len(decision.region)
        none = np.full(n, NO_REGION, dtype=np.int64)
        return cls(
            region=decision.region.astype(np.int64).copy(),
            allocation=decision.allocation.astype(np.float64).copy(),
            pending_region=none.copy(),
            pending_allocation=np.zeros_like(decision.allocation, dtype=np.float64),
            pending_ready_s=np.full(n, np.inf),
            scale_target=decision.allocation.astype(np.float64).copy(),
            scale_ready_s=np.full(n, np.inf),
            warm_region=none.copy(),
            warm_allocation=np.zeros_like(decision.allocation, dtype=np.float64),
            warm_ready_s=np.full(n, np.inf),
        )


class Engine:
    """Runs one policy over the evaluation range and accounts its metrics."""

    def __init__(self, context: PolicyContext, record: WorldRecord, settings: Settings) -> None:
        self.context = context
        self.record = record
        self.settings = settings
        self.catalogue = context.catalogue
        self.prices = np.array(
            [[r.vcpu_hour_usd, r.ram_gb_hour_usd] for r in self.catalogue], dtype=np.float64
        )
        self.capacity_vcpu = np.array([r.capacity_vcpu for r in self.catalogue])
        self.interval_s = context.interval_seconds
        self.tick_s = settings.evaluation.accounting_seconds
        self.ticks = max(1, round(self.interval_s / self.tick_s))
        self.copy_s = copy_seconds(settings.evaluation.session_bytes, settings.router)
        self.scale_s = settings.provisioning.scale_up_seconds
        self.warm_fraction = settings.provisioning.warm_fraction

    def run(
        self, policy: Policy, trace: PolicyTrace | None = None, directory: Path | None = None
    ) -> dict[str, float]:
        """Drive ``policy`` over every evaluation step; its metrics in the JSON contract, with
        what its reservations went through (``reservations_*``, ``orphaned_resources``).

        ``trace``, when given, records what the policy did at every step (for the report).
        ``directory`` keeps the policy's ledger and local cloud (SQLite); by default they live
        in a temporary directory, removed afterwards.
        """
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            return self._run(policy, trace, directory)
        with tempfile.TemporaryDirectory(prefix="prewarm-eval-") as scratch:
            return self._run(policy, trace, Path(scratch))

    def _run(self, policy: Policy, trace: PolicyTrace | None, directory: Path) -> dict[str, float]:
        record, first = self.record, self.context.first_step
        start = self.context.start + pd.Timedelta(seconds=first * self.interval_s)
        provisioning = Provisioning(
            self.settings, self.catalogue, self.context.user_ids, start.to_pydatetime(),
            directory, self.copy_s,
        )  # fmt: skip
        n_users = record.n_users
        latency_ms = np.full((n_users, record.n_steps), np.nan)
        served = np.broadcast_to(self.context.home_region[:, None], latency_ms.shape).copy()
        latency_ms[:, :first] = self._measured(served[:, :first], 0, first)
        metrics = MetricsAccumulator(self.settings.latency_slo_ms, self.tick_s)
        refusals = Refusals()
        state: ServingState | None = None
        for step in range(first, record.n_steps):
            observed = self._observed(step, latency_ms, state)
            decision = policy.decide(step, observed)
            self._check(decision, n_users)
            # A warm hold holds its share of the allocation asked until it is used.
            decision = replace(
                decision, warm_allocation=decision.warm_allocation * self.warm_fraction
            )
            t0 = (step - first) * self.interval_s
            fresh = state is None
            if fresh:
                state = ServingState.start(_nothing_held(decision))
            else:
                _drop_warm(state, provisioning.expire(t0))
            decision = grant(state, decision, self._available(step), refusals)
            if fresh:
                state = ServingState.start(decision)
            self._apply(state, decision, t0, provisioning)
            self._account(state, step, t0, metrics)
            serving_now = self._complete(state, t0 + self.interval_s, metrics, provisioning)
            served[:, step] = serving_now
            if trace is not None:
                trace.add(step - first, decision, serving_now)
            latency_ms[:, step] = self._measured(served[:, step : step + 1], step, step + 1)[:, 0]
        ledger = provisioning.close((record.n_steps - first) * self.interval_s)
        return metrics.results() | _refusal_metrics(refusals) | ledger

    # ----- what the policy sees ---------------------------------------------------------------

    def _observed(self, step: int, latency_ms: np.ndarray, state: ServingState | None) -> Observed:
        record = self.record
        if state is None:
            region = self.context.home_region.copy()
            allocation = np.zeros((record.n_users, len(RESOURCES)))
            pending = np.full(record.n_users, NO_REGION, dtype=np.int64)
            held = np.zeros(len(self.catalogue))
        else:
            region, allocation = state.region.copy(), state.allocation.copy()
            pending = state.pending_region.copy()
            held = held_vcpu(state, len(self.catalogue))
        return Observed(
            step=step,
            lat=record.observed_lat[:, :step],
            lon=record.observed_lon[:, :step],
            demand=record.demand[:, :step],
            other_demand=record.other_demand[:, :step],
            latency_ms=latency_ms[:, :step],
            session_active=record.session_active[:, :step],
            region=region,
            allocation=allocation,
            pending_region=pending,
            free_vcpu=self._available(step) - held,
        )

    def _available(self, step: int) -> np.ndarray:
        """(regions,) vCPU the background load leaves at ``step`` (before this policy's holds)."""
        load = self.record.utilisation[min(step, self.record.n_steps - 1)]
        return self.capacity_vcpu * (1.0 - load)

    def _measured(self, regions: np.ndarray, start: int, stop: int) -> np.ndarray:
        """What a probe measures: expected latency from the true position, plus the jitter."""
        out = np.empty(regions.shape)
        for column, step in enumerate(range(start, stop)):
            out[:, column] = self._true_latency(step, regions[:, column])
        out += self.record.jitter_ms[:, start:stop]
        out[~self.record.session_active[:, start:stop]] = np.nan
        return out

    def _true_latency(self, step: int, regions: np.ndarray) -> np.ndarray:
        return expected_latency(
            self.record, self.context.latency, self.catalogue.lat, self.catalogue.lon, step, regions
        )

    def _check(self, decision: Decision, n_users: int) -> None:
        shape = (n_users, len(RESOURCES))
        if decision.region.shape != (n_users,) or decision.warm_region.shape != (n_users,):
            raise ValueError("a decision needs one region and one warm region per user")
        if decision.allocation.shape != shape or decision.warm_allocation.shape != shape:
            raise ValueError(f"a decision's allocations must be shaped {shape}")
        if np.any(decision.allocation < 0) or np.any(decision.warm_allocation < 0):
            raise ValueError("allocations must be non-negative")
        regions = len(self.catalogue)
        if np.any((decision.region < 0) | (decision.region >= regions)):
            raise ValueError(f"serving regions must lie in [0, {regions})")

    # ----- applying a decision ----------------------------------------------------------------

    def _apply(
        self, state: ServingState, decision: Decision, t0: float, provisioning: Provisioning
    ) -> None:
        # First the moves: a move consumes the warm hold it targets.
        self._apply_moves(state, decision, t0, provisioning)
        self._apply_warm(state, decision, t0, provisioning)
        self._apply_scaling(state, decision, t0)

    def _apply_warm(
        self, state: ServingState, decision: Decision, t0: float, provisioning: Provisioning
    ) -> None:
        """Holds the policy no longer asks for are released, new ones requested; a hold kept
        in the same region keeps the reservation it has (and its size)."""
        wanted = decision.warm_region.astype(np.int64).copy()
        wanted[(wanted == state.region) | (wanted == state.pending_region)] = NO_REGION
        changed = wanted != state.warm_region
        provisioning.release_warm(np.flatnonzero(changed & (state.warm_region != NO_REGION)), t0)
        _drop_warm(state, changed)
        asking = np.flatnonzero(changed & (wanted != NO_REGION))
        if asking.size == 0:
            return
        full = decision.warm_allocation[asking] / self.warm_fraction
        ready = provisioning.hold(asking, wanted[asking], full, t0)
        held = asking[np.isfinite(ready)]
        state.warm_region[held] = wanted[held]
        state.warm_allocation[held] = decision.warm_allocation[held]
        state.warm_ready_s[held] = ready[np.isfinite(ready)]

    def _apply_moves(
        self, state: ServingState, decision: Decision, t0: float, provisioning: Provisioning
    ) -> None:
        target = decision.region.astype(np.int64)
        cancelled = (target == state.region) & (state.pending_region != NO_REGION)
        provisioning.give_back_pending(np.flatnonzero(cancelled), t0)
        state.pending_region[cancelled] = NO_REGION
        state.pending_ready_s[cancelled] = np.inf
        retarget = target == state.pending_region
        state.pending_allocation[retarget] = decision.allocation[retarget]
        new = (target != state.region) & (target != state.pending_region)
        from_warm = new & (state.warm_region == target)
        users = np.flatnonzero(new)
        ready = provisioning.move(
            users, target[users], decision.allocation[users], from_warm[users],
            state.warm_ready_s[users], t0,
        )  # fmt: skip
        # A move the provider refused leaves the user where they are, with nothing under way.
        started, refused = users[np.isfinite(ready)], users[~np.isfinite(ready)]
        state.pending_region[refused] = NO_REGION
        state.pending_ready_s[refused] = np.inf
        state.pending_region[started] = target[started]
        state.pending_allocation[started] = decision.allocation[started]
        state.pending_ready_s[started] = ready[np.isfinite(ready)]
        _drop_warm(state, from_warm)

    def _apply_scaling(self, state: ServingState, decision: Decision, t0: float) -> None:
        in_place = decision.region.astype(np.int64) == state.region
        wanted = np.where(in_place[:, None], decision.allocation, state.allocation)
        state.allocation = np.minimum(state.allocation, wanted)
        grow = np.any(wanted > state.allocation, axis=1)
        start = grow & ~np.isfinite(state.scale_ready_s)
        state.scale_ready_s[start] = t0 + self.scale_s
        state.scale_ready_s[~grow] = np.inf
        state.scale_target = wanted

    # ----- accounting -------------------------------------------------------------------------

    def _account(self, state: ServingState, step: int, t0: float, metrics: MetricsAccumulator):
        record = self.record
        tick_starts = t0 + self.tick_s * np.arange(self.ticks)  # (ticks,)
        moved = state.pending_ready_s[:, None] <= tick_starts[None, :]  # (users, ticks)
        scaled = state.scale_ready_s[:, None] <= tick_starts[None, :]
        region = np.where(moved, state.pending_region[:, None], state.region[:, None])
        in_place = np.where(
            scaled[..., None], state.scale_target[:, None, :], state.allocation[:, None, :]
        )
        allocation = np.where(moved[..., None], state.pending_allocation[:, None, :], in_place)
        latency = np.stack(
            [self._true_latency(step, region[:, k]) for k in range(self.ticks)], axis=1
        )
        booting = (state.pending_region != NO_REGION)[:, None] & ~moved
        idle = np.where(booting[..., None], state.pending_allocation[:, None, :], 0.0)
        idle_cost = np.zeros(idle.shape[:2])
        pending = np.maximum(state.pending_region, 0)
        idle_cost += np.einsum("utr,ur->ut", idle, self.prices[pending])
        warm = state.warm_region != NO_REGION
        warm_alloc = np.where(warm[:, None], state.warm_allocation, 0.0)
        warm_cost = (warm_alloc * self.prices[np.maximum(state.warm_region, 0)]).sum(axis=1)
        metrics.add(
            active=record.session_active[:, step],
            demand=record.demand[:, step],
            latency_ms=latency,
            allocation=allocation,
            served_cost_per_hour=np.einsum("utr,utr->ut", allocation, self.prices[region]),
            idle_vcpu=idle[..., 0] + warm_alloc[:, 0:1],
            idle_cost_per_hour=idle_cost + warm_cost[:, None],
            unavoidable=record.best_latency_ms[:, step] > self.settings.latency_slo_ms,
        )

    def _complete(
        self,
        state: ServingState,
        t_end: float,
        metrics: MetricsAccumulator,
        provisioning: Provisioning,
    ) -> np.ndarray:
        """Commit the changes that completed within the interval; the serving regions at its end."""
        done = state.pending_ready_s <= t_end
        provisioning.moved(np.flatnonzero(done), state.pending_ready_s[done])
        state.region[done] = state.pending_region[done]
        state.allocation[done] = state.pending_allocation[done]
        state.scale_target[done] = state.pending_allocation[done]
        state.scale_ready_s[done] = np.inf
        state.pending_region[done] = NO_REGION
        state.pending_ready_s[done] = np.inf
        metrics.migrations += int(done.sum())
        scaled = state.scale_ready_s <= t_end
        state.allocation[scaled] = state.scale_target[scaled]
        state.scale_ready_s[scaled] = np.inf
        return state.region.copy()


def _drop_warm(state: ServingState, users: np.ndarray) -> None:
    """``users`` (a bool mask) hold nothing warm any more."""
    state.warm_region[users] = NO_REGION
    state.warm_allocation[users] = 0.0
    state.warm_ready_s[users] = np.inf


def _nothing_held(decision: Decision) -> Decision:
    """``decision``'s regions with nothing allocated: what the first decision is granted from."""
    empty = np.zeros_like(decision.allocation, dtype=np.float64)
    return Decision(decision.region, empty, decision.warm_region, empty)


def _refusal_metrics(refusals: Refusals) -> dict[str, float]:
    """Requests refused for capacity (beyond the contract)."""
    return {
        "capacity_refusals": float(refusals.total()),
        "capacity_refused_moves": float(refusals.moves),
        "capacity_refused_warm_holds": float(refusals.warm_holds),
        "capacity_refused_growth": float(refusals.growth),
    }


def lead_steps(seconds: float, interval_seconds: float) -> int:
    """Whole intervals needed to cover ``seconds`` of delay."""
    return max(0, math.ceil(seconds / interval_seconds))
