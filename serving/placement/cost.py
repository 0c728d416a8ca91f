"""What serving a user from each region costs and gives, for one window.

Money: the allocation held for the window at the region's unit prices (vCPU-hours, GB-hours,
IOPS-hours) plus the expected egress at its price per GB. Service: the expected hours of SLO
violation, which are hours with demand above the allocation plus, in the other hours, the
chance that the round trip from where the user is to the region exceeds ``latency_slo_ms``
(the two taken as independent over the window). Proximity: a small value per expected ms, so
that the nearer of two otherwise equal regions wins. Moving away from the current region
costs ``switch_cost_usd``.

Latency from a location (a catalogue region's metro, as the profile predicts it) to a serving
region is the latency model's mean round trip (inflated fibre distance, last mile) plus the
mean of its exponential jitter; so P(latency > SLO) = exp(-(SLO - base) / jitter) below the SLO.
A measured latency for a (user, region) pair replaces the model for that pair where the user is
now, which placement takes to be the location of their current region; where the forecast puts
them elsewhere the model still applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.latency import LatencyModel
from core.regions import RegionCatalogue
from core.settings import PlacementSettings, Settings
from serving.placement.inputs import PlacementInputs
from serving.placement.problem import Problem
from serving.placement.windows import WindowDemand

GROWTH_TOLERANCE = 1e-9  # relative: an allocation this close to the current one fits it


@dataclass(frozen=True, eq=False)
class RegionTables:
    """Per-region prices and the location-to-region latency of the catalogue."""

    latency_ms: np.ndarray  # (S, S) expected round trip, location (row) to serving region
    violation: np.ndarray  # (S, S) P(round trip > SLO), same layout
    hourly_price: np.ndarray  # (S, 3) USD per vCPU-hour, GB-hour, IOPS-hour
    egress_usd_per_gb: np.ndarray  # (S,)


@dataclass(frozen=True, eq=False)
class Figures:
    """What serving users from given regions costs and gives, one entry per user (or pair)."""

    money_usd: np.ndarray  # allocation and expected egress for the window
    violation_hours: np.ndarray  # expected hours violating the SLO
    latency_ms: np.ndarray  # expected round trip
    location_probability: np.ndarray  # P(the user is where the region meets the SLO)


@dataclass(frozen=True, eq=False)
class Options:
    """The regions open to each user of one window, and what they cost and give."""

    current: np.ndarray  # (n,) current region
    moving: np.ndarray  # (n,) likely to be where the current region misses the SLO
    growing: np.ndarray  # (n,) the allocation needed exceeds the one held
    deciding: np.ndarray  # (n,) bool: moving or growing; the others keep what they have
    at_current: Figures  # (n,) vectors, every user in their current region
    for_deciding: Figures  # (deciding users, regions) matrices
    problem: Problem  # the choice among candidates for the deciding users, in order

    def at(self, region: np.ndarray) -> Figures:
        """Figures of every user in ``region`` (n,); a non-deciding user's must be current."""
        decided = np.flatnonzero(self.deciding)
        chosen = region[decided]
        fields = {}
        for name in ("money_usd", "violation_hours", "latency_ms", "location_probability"):
            values = getattr(self.at_current, name).copy()
            values[decided] = getattr(self.for_deciding, name)[np.arange(len(decided)), chosen]
            fields[name] = values
        return Figures(**fields)


def region_tables(catalogue: RegionCatalogue, settings: Settings) -> RegionTables:
    """Prices and the location-to-region latency tables for ``catalogue``."""
    model = LatencyModel(settings.latency)
    distance = catalogue.distances_km(catalogue.lat, catalogue.lon)
    expected = model.expected_ms(distance) + settings.latency.jitter_ms
    prices = np.array(
        [[r.vcpu_hour_usd, r.ram_gb_hour_usd, r.iops_hour_usd] for r in catalogue]
    )
    return RegionTables(
        latency_ms=expected,
        violation=slo_violation_probability(
            expected, settings.latency_slo_ms, settings.latency.jitter_ms
        ),
        hourly_price=prices,
        egress_usd_per_gb=np.array([r.egress_gb_usd for r in catalogue]),
    )


def slo_violation_probability(
    expected_ms: np.ndarray, slo_ms: float, jitter_ms: float
) -> np.ndarray:
    """P(round trip > slo_ms) for a round trip of mean ``expected_ms`` with exponential jitter."""
    base = np.maximum(np.asarray(expected_ms, dtype=np.float64) - jitter_ms, 0.0)
    if jitter_ms <= 0:
        return (base > slo_ms).astype(np.float64)
    return np.where(base >= slo_ms, 1.0, np.exp(-(slo_ms - base) / jitter_ms))


def window_options(
    demand: WindowDemand,
    inputs: PlacementInputs,
    tables: RegionTables,
    settings: Settings,
) -> Options:
    """Cost, service and candidacy of the regions for the users of one window.

    Users who will neither be elsewhere (``move_probability``) nor need more than they hold
    keep what they have; only the others (``deciding``) get the full users x regions matrices.
    """
    placement = settings.placement
    rows = np.arange(demand.n_users)
    current = inputs.current_region[demand.users]
    held = inputs.current_allocation[demand.users]
    away = demand.presence @ tables.violation  # hours where the region misses the SLO
    latency = demand.presence @ tables.latency_ms  # latency-hours
    _apply_measurements(demand, inputs, tables, settings, current, away, latency)
    # Latency misses count in the hours demand stays within the allocation (independence).
    within = 1.0 - demand.shortfall_hours / demand.hours

    at_current = Figures(
        money_usd=demand.hours * (demand.need[:, :3] * tables.hourly_price[current]).sum(axis=1)
        + demand.traffic_gb * tables.egress_usd_per_gb[current],
        violation_hours=demand.shortfall_hours + within * away[rows, current],
        latency_ms=latency[rows, current] / demand.hours,
        location_probability=np.clip(1.0 - away[rows, current] / demand.hours, 0.0, 1.0),
    )
    moving = 1.0 - at_current.location_probability >= placement.move_probability
    growing = (demand.need > held * (1 + GROWTH_TOLERANCE)).any(axis=1)
    deciding = moving | growing
    chosen = np.flatnonzero(deciding)
    hours = demand.hours[chosen, None]
    for_deciding = Figures(
        money_usd=hours * (demand.need[chosen, :3] @ tables.hourly_price.T)
        + demand.traffic_gb[chosen, None] * tables.egress_usd_per_gb[None, :],
        violation_hours=demand.shortfall_hours[chosen, None]
        + within[chosen, None] * away[chosen],
        latency_ms=latency[chosen] / hours,
        location_probability=np.clip(1.0 - away[chosen] / hours, 0.0, 1.0),
    )
    objective = _objective(for_deciding, current[chosen], hours, placement)
    return Options(
        current=current,
        moving=moving,
        growing=growing,
        deciding=deciding,
        at_current=at_current,
        for_deciding=for_deciding,
        problem=Problem(
            cost=objective,
            need=demand.need[chosen],
            increment=np.maximum(demand.need[chosen] - held[chosen], 0.0),
            current=current[chosen],
            capacity=inputs.capacity,
            unplaced_cost=_unplaced_cost(objective, placement, hours[:, 0]),
        ),
    )


def _unplaced_cost(
    objective: np.ndarray, placement: PlacementSettings, hours: np.ndarray
) -> np.ndarray:
    """Leaving a user unplaced costs more than any of their options, by the penalty's hours."""
    dearest = np.where(np.isfinite(objective), objective, 0.0).max(axis=1, initial=0.0)
    return dearest + placement.unplaced_penalty_usd_per_hour * hours


def _objective(
    figures: Figures, current: np.ndarray, hours: np.ndarray, placement: PlacementSettings
) -> np.ndarray:
    """Money + SLO penalty + proximity + switch cost per (user, region); inf where no candidate.

    A region other than the current one is a candidate only where the user is at least
    ``move_probability`` likely to be where it meets the SLO.
    """
    rows = np.arange(len(current))
    objective = figures.money_usd + placement.slo_penalty_usd_per_hour * figures.violation_hours
    objective += placement.latency_usd_per_ms_hour * figures.latency_ms * hours
    objective += placement.switch_cost_usd
    objective[rows, current] -= placement.switch_cost_usd
    closed = figures.location_probability < placement.move_probability
    closed[rows, current] = False
    objective[closed] = np.inf
    return objective


def _apply_measurements(
    demand: WindowDemand,
    inputs: PlacementInputs,
    tables: RegionTables,
    settings: Settings,
    current: np.ndarray,
    away: np.ndarray,
    latency_hours: np.ndarray,
) -> None:
    """Replace the model by measured latency for the measured pairs, at the current location.

    ``away`` (expected hours where the region misses the SLO) and ``latency_hours`` are
    (users, regions) sums over locations; the term of the current location is corrected in place.
    """
    if len(inputs.measured_user) == 0:
        return
    position = np.full(inputs.n_users, -1, dtype=np.int64)
    position[demand.users] = np.arange(demand.n_users)
    user = position[inputs.measured_user]
    keep = user >= 0
    user, region, measured = user[keep], inputs.measured_region[keep], inputs.measured_ms[keep]
    here = current[user]
    measured_violation = slo_violation_probability(
        measured, settings.latency_slo_ms, settings.latency.jitter_ms
    )
    hours_here = demand.presence[user, here]
    away[user, region] += hours_here * (measured_violation - tables.violation[here, region])
    latency_hours[user, region] += hours_here * (measured - tables.latency_ms[here, region])
