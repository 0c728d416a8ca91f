"""The switchover rule, as pure functions: no I/O, no clock, no web.

The seed's rule (CONCEPT.md, ``handleUserSession``)::

    IF latencyCurrent > latencyThreshold OR predictedLatencyPreAllocated < latencyThreshold
        migrate the session to the pre-allocated region

is applied as written, with three guards against flapping, all on by default (the defaults
are in ``RouterSettings``; a pushed config may override each one):

- **smoothing**: ``latencyCurrent`` is the EWMA of the probes to the region the user is
  connected to (weight ``ewma_alpha`` on each new probe), trusted only once that region has
  ``min_samples`` probes, so a single spike does not move anyone;
- **hysteresis**: the threshold is widened by ``hysteresis_ms`` on both sides: switch when the
  current latency exceeds ``threshold + hysteresis`` or the predicted latency at the target is
  below ``threshold - hysteresis``; latencies hovering around the threshold cause nothing;
- **cooldown**: after a switchover a user is not switched again for ``cooldown_s`` seconds,
  which bounds the switchovers of any user to one per cooldown whatever the probes and configs.

``predictedLatencyPreAllocated`` is the smoothed latency measured to the pre-allocated region
once it has ``min_samples`` probes (a measurement predicts the latency there better than any
model); before that it is the placement plan's ``expected_latency_ms`` for that region.
A user already at the pre-allocated region, or with no pre-allocation, stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from serving.router.models import Allocation, Policy, Probe, RegionStats, RouteState

VerdictCode = Literal[
    "unallocated",
    "at_target",
    "cooldown",
    "current_over_threshold",
    "target_under_threshold",
    "within_threshold",
]


@dataclass(frozen=True)
class Verdict:
    """What ``decide`` concluded for one user: switch to ``target`` or stay, and why."""

    switch: bool
    code: VerdictCode
    reason: str
    target: str | None = None


def observe(previous: RegionStats | None, probe: Probe, alpha: float, at: datetime) -> RegionStats:
    """Fold one probe into a region's smoothed measurements (the first probe starts the EWMA)."""
    if previous is None:
        return RegionStats(
            latency_ms=probe.latency_ms,
            samples=1,
            last_at=at,
            throughput_mbps=probe.throughput_mbps,
            cpu_utilisation=probe.cpu_utilisation,
        )
    return RegionStats(
        latency_ms=_ewma(previous.latency_ms, probe.latency_ms, alpha),
        samples=previous.samples + 1,
        last_at=at,
        throughput_mbps=_ewma(previous.throughput_mbps, probe.throughput_mbps, alpha),
        cpu_utilisation=_ewma(previous.cpu_utilisation, probe.cpu_utilisation, alpha),
    )


def decide(
    route: RouteState, allocation: Allocation | None, policy: Policy, now: datetime
) -> Verdict:
    """Apply the seed's switchover rule, with smoothing, hysteresis and cooldown, to one user."""
    if allocation is None:
        return Verdict(False, "unallocated", "no pre-allocation for this user in the config")
    target = allocation.region
    if route.region == target:
        return Verdict(False, "at_target", f"connected to the pre-allocated region {target}")
    if route.last_switch_at is not None:
        until = route.last_switch_at + timedelta(seconds=policy.cooldown_s)
        if now < until:
            return Verdict(
                False, "cooldown", f"switched at {route.last_switch_at:%H:%M:%S}; "
                f"cooling down until {until:%Y-%m-%d %H:%M:%S}"
            )  # fmt: skip
    threshold, margin = policy.latency_threshold_ms, policy.hysteresis_ms
    current = trusted_latency(route, route.region, policy.min_samples)
    if current is not None and current > threshold + margin:
        return Verdict(
            True, "current_over_threshold",
            f"latency to {route.region} {current:.1f} ms > threshold {threshold:g} + "
            f"hysteresis {margin:g} ms; moving to pre-allocated {target}", target,
        )  # fmt: skip
    predicted, source = predicted_latency(route, allocation, policy.min_samples)
    if predicted is not None and predicted < threshold - margin:
        return Verdict(
            True, "target_under_threshold",
            f"{source} latency at pre-allocated {target} {predicted:.1f} ms < threshold "
            f"{threshold:g} - hysteresis {margin:g} ms", target,
        )  # fmt: skip
    return Verdict(
        False, "within_threshold",
        f"latency to {route.region} {_ms(current)} not above {threshold + margin:g} ms and "
        f"{source} latency at {target} {_ms(predicted)} not below {threshold - margin:g} ms",
    )  # fmt: skip


def trusted_latency(route: RouteState, region: str | None, min_samples: int) -> float | None:
    """The smoothed latency to ``region`` once it has ``min_samples`` probes, else None."""
    stats = route.stats.get(region) if region is not None else None
    if stats is None or stats.samples < min_samples:
        return None
    return stats.latency_ms


def predicted_latency(
    route: RouteState, allocation: Allocation, min_samples: int
) -> tuple[float | None, str]:
    """Latency expected at the pre-allocated region: measured when trusted, else the plan's."""
    measured = trusted_latency(route, allocation.region, min_samples)
    if measured is not None:
        return measured, "measured"
    return allocation.expected_latency_ms, "planned"


def _ewma(previous: float | None, value: float | None, alpha: float) -> float | None:
    if value is None:
        return previous
    if previous is None:
        return value
    return previous + alpha * (value - previous)


def _ms(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} ms"
