"""The metrics of the evaluation's JSON contract, accumulated tick by tick.

Resource-hours are vCPU-hours (the allocation's first resource); cost is every held vCPU and GB
of memory at its region's hourly price, warm holds and booting capacity included.

Beyond the contract, violation minutes are broken down (a minute can be in both of the first
two): ``latency_violation_minutes`` (latency above the SLO), ``demand_violation_minutes``
(demand above the allocation) and ``unavoidable_violation_minutes``: minutes whose true position
has no region under the SLO at all, which every policy, the oracle included, counts as
violations. They stay in ``slo_violation_minutes``; reductions are read honestly on
``slo_violation_minutes - unavoidable_violation_minutes``.
"""

from __future__ import annotations

import numpy as np

SECONDS_PER_HOUR = 3600.0


class MetricsAccumulator:
    """Sums, over (users, ticks) arrays of one interval at a time, what the contract reports."""

    def __init__(self, slo_ms: float, tick_seconds: float) -> None:
        self.slo_ms = slo_ms
        self.tick_hours = tick_seconds / SECONDS_PER_HOUR
        self.active_ticks = 0
        self.violating_ticks = 0
        self.latency_ticks = 0
        self.short_ticks = 0
        self.unavoidable_ticks = 0
        self.demand_total: np.ndarray | float = 0.0  # per resource
        self.unmet_total: np.ndarray | float = 0.0
        self.served_vcpu_hours = 0.0
        self.idle_vcpu_hours = 0.0
        self.cost_usd = 0.0
        self.migrations = 0
        self._latencies: list[np.ndarray] = []

    def add(
        self,
        active: np.ndarray,
        demand: np.ndarray,
        latency_ms: np.ndarray,
        allocation: np.ndarray,
        served_cost_per_hour: np.ndarray,
        idle_vcpu: np.ndarray,
        idle_cost_per_hour: np.ndarray,
        unavoidable: np.ndarray | None = None,
    ) -> None:
        """Account one interval: ``active`` and ``unavoidable`` (users,), ``demand`` (users,
        resources), the rest (users, ticks) or (users, ticks, resources) for ``allocation``."""
        ticks = latency_ms.shape[1]
        on = np.broadcast_to(active[:, None], latency_ms.shape)
        wanted = np.broadcast_to(demand[:, None, :], allocation.shape)
        short = np.any(wanted > allocation + 1e-9, axis=2)
        self.active_ticks += int(on.sum())
        slow = latency_ms > self.slo_ms
        self.violating_ticks += int((on & (slow | short)).sum())
        self.latency_ticks += int((on & slow).sum())
        self.short_ticks += int((on & short).sum())
        if unavoidable is not None:
            self.unavoidable_ticks += int((active & unavoidable).sum()) * ticks
        self.demand_total = self.demand_total + wanted[on].sum(axis=0)
        self.unmet_total = self.unmet_total + np.maximum(wanted - allocation, 0.0)[on].sum(axis=0)
        self.served_vcpu_hours += float(allocation[..., 0].sum()) * self.tick_hours
        self.idle_vcpu_hours += float(idle_vcpu.sum()) * self.tick_hours
        self.cost_usd += float(served_cost_per_hour.sum() + idle_cost_per_hour.sum()) * (
            self.tick_hours
        )
        if ticks:
            self._latencies.append(latency_ms[on].astype(np.float32))

    def _unmet_fraction(self) -> float:
        """Unmet share of the demand, averaged over the resources that had any demand."""
        total = np.atleast_1d(np.asarray(self.demand_total, dtype=np.float64))
        unmet = np.atleast_1d(np.asarray(self.unmet_total, dtype=np.float64))
        asked = total > 0
        return float(np.mean(unmet[asked] / total[asked])) if asked.any() else 0.0

    def results(self) -> dict[str, float]:
        """The contract's metrics (DESIGN.md section 4, ``prewarm evaluate``)."""
        minutes = self.tick_hours * 60.0
        latencies = np.concatenate(self._latencies) if self._latencies else np.empty(0)
        return {
            "user_minutes": self.active_ticks * minutes,
            "slo_violation_minutes": self.violating_ticks * minutes,
            "unmet_demand_fraction": self._unmet_fraction(),
            "served_resource_hours": self.served_vcpu_hours,
            "idle_warm_resource_hours": self.idle_vcpu_hours,
            "cost_usd": self.cost_usd,
            "migrations": float(self.migrations),
            "p95_latency_ms": float(np.percentile(latencies, 95)) if latencies.size else 0.0,
            "latency_violation_minutes": self.latency_ticks * minutes,
            "demand_violation_minutes": self.short_ticks * minutes,
            "unavoidable_violation_minutes": self.unavoidable_ticks * minutes,
        }
