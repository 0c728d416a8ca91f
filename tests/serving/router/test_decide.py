"""The switchover rule: the seed's two conditions, smoothing, hysteresis, cooldown."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from serving.router.decide import decide, observe
from serving.router.models import Policy, Probe, RouteState
from tests.serving.router.conftest import EAST, EUROPE, WEST, allocation

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)
POLICY = Policy(
    latency_threshold_ms=60.0, ewma_alpha=0.5, hysteresis_ms=5.0, cooldown_s=600.0, min_samples=3
)


def route_at(region: str | None = WEST, **fields) -> RouteState:
    return RouteState(user_id="u1", region=region, reason="test", since=T0, **fields)


def probed(route: RouteState, region: str, *latencies: float, at: datetime = T0) -> RouteState:
    """``route`` after probes of ``latencies`` to ``region``."""
    stats = dict(route.stats)
    for latency in latencies:
        probe = Probe(user_id=route.user_id, region=region, latency_ms=latency)
        stats[region] = observe(stats.get(region), probe, POLICY.ewma_alpha, at)
    return replace(route, stats=stats)


def test_ewma_smooths_latency_and_keeps_throughput_and_cpu() -> None:
    first = observe(None, Probe(user_id="u", region=EAST, latency_ms=100.0, cpu_utilisation=0.2),
                    0.25, T0)  # fmt: skip
    second = observe(first, Probe(user_id="u", region=EAST, latency_ms=20.0, throughput_mbps=8.0),
                     0.25, T0)  # fmt: skip
    assert (first.latency_ms, first.samples) == (100.0, 1)
    assert second.latency_ms == 80.0  # 100 + 0.25 * (20 - 100)
    assert second.samples == 2
    assert second.cpu_utilisation == 0.2  # not measured this time: the previous value stays
    assert second.throughput_mbps == 8.0


def test_switches_when_current_latency_exceeds_threshold_plus_hysteresis() -> None:
    plan = allocation("u1", region=EAST, current=WEST, expected_latency_ms=None)
    verdict = decide(probed(route_at(), WEST, 90, 90, 90), plan, POLICY, T0)
    assert verdict.switch and verdict.target == EAST
    assert verdict.code == "current_over_threshold"
    assert "90.0 ms" in verdict.reason


def test_switches_when_predicted_latency_at_target_is_below_threshold() -> None:
    plan = allocation("u1", region=EAST, current=WEST, expected_latency_ms=30.0)
    verdict = decide(probed(route_at(), WEST, 40, 40, 40), plan, POLICY, T0)
    assert verdict.switch and verdict.code == "target_under_threshold"
    assert "planned latency" in verdict.reason


def test_a_measured_target_latency_overrides_the_plan() -> None:
    plan = allocation("u1", region=EAST, current=WEST, expected_latency_ms=30.0)
    route = probed(probed(route_at(), WEST, 40, 40, 40), EAST, 90, 90, 90)
    verdict = decide(route, plan, POLICY, T0)
    assert not verdict.switch and verdict.code == "within_threshold"


def test_stays_inside_the_hysteresis_band() -> None:
    plan = allocation("u1", region=EAST, current=WEST, expected_latency_ms=57.0)
    # 64 ms is above the 60 ms threshold but not above 60 + 5; 57 ms is not below 60 - 5.
    verdict = decide(probed(route_at(), WEST, 64, 64, 64), plan, POLICY, T0)
    assert not verdict.switch and verdict.code == "within_threshold"


def test_one_spike_is_not_trusted_before_min_samples() -> None:
    plan = allocation("u1", region=EAST, current=WEST, expected_latency_ms=None)
    assert not decide(probed(route_at(), WEST, 500), plan, POLICY, T0).switch
    assert not decide(probed(route_at(), WEST, 500, 500), plan, POLICY, T0).switch
    assert decide(probed(route_at(), WEST, 500, 500, 500), plan, POLICY, T0).switch


def test_smoothing_absorbs_a_spike_among_good_probes() -> None:
    plan = allocation("u1", region=EAST, current=WEST, expected_latency_ms=None)
    route = probed(route_at(), WEST, 40, 40, 40, 40, 95)  # EWMA: 40 + 0.5 * 55 = 67.5
    assert decide(route, plan, POLICY, T0).switch  # a strong spike still counts ...
    calm = probed(route_at(), WEST, 40, 40, 40, 40, 85)  # ... a moderate one (62.5) does not
    assert not decide(calm, plan, POLICY, T0).switch


def test_no_allocation_or_already_there_means_stay() -> None:
    bad = probed(route_at(), WEST, 500, 500, 500)
    assert decide(bad, None, POLICY, T0).code == "unallocated"
    here = allocation("u1", region=WEST, current=WEST, expected_latency_ms=1.0)
    assert decide(bad, here, POLICY, T0).code == "at_target"


def test_cooldown_blocks_a_second_switch_until_it_ends() -> None:
    plan = allocation("u1", region=EAST, current=WEST, expected_latency_ms=10.0)
    route = route_at(last_switch_at=T0, switches=1)
    assert decide(route, plan, POLICY, T0 + timedelta(seconds=599)).code == "cooldown"
    assert decide(route, plan, POLICY, T0 + timedelta(seconds=600)).switch


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([EAST, WEST, EUROPE]),  # the region the config pre-allocates
            st.floats(0, 200),  # probe to where the user is
            st.floats(0, 200),  # probe to the pre-allocated region
            st.integers(1, 120),  # seconds until the next round
        ),
        min_size=1,
        max_size=60,
    )
)
def test_a_user_never_switches_twice_within_the_cooldown(steps) -> None:
    """Whatever the probes and however the plan changes, switchovers are a cooldown apart."""
    route, now, switched_at = route_at(), T0, []
    for target, here_ms, there_ms, gap_s in steps:
        plan = allocation("u1", region=target, current=WEST, expected_latency_ms=there_ms)
        route = probed(route, route.region, here_ms, at=now)
        route = probed(route, target, there_ms, at=now)
        verdict = decide(route, plan, POLICY, now)
        if verdict.switch:
            assert verdict.target != route.region
            switched_at.append(now)
            route = replace(route, region=verdict.target, last_switch_at=now)
        now += timedelta(seconds=gap_s)
    gaps = [b - a for a, b in itertools.pairwise(switched_at)]
    assert all(gap >= timedelta(seconds=POLICY.cooldown_s) for gap in gaps)
