"""plan_placement: from predicted profiles to an explained, capacity-feasible placement plan.

For each user and window of the forecast horizon it picks the serving region and the allocation
(the configured quantile plus headroom) that minimise expected cost plus a penalty per expected
hour of SLO violation, within every region's remaining capacity (``serving.placement.cost``
has the model). Users who will neither be elsewhere (``move_probability``) nor need more than
they hold are kept as they are without entering the optimisation; the others are placed by
HiGHS when there are at most ``exact_max_users`` of them in a window, by the vectorised
heuristic beyond (whose part around any users it left unplaced is then re-solved exactly,
``serving.placement.polish``). Windows are independent decisions, each against the same
current state: a plan says, per window, where each user should be served and with what.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pandas as pd

from core.regions import load_regions
from core.settings import Settings, get_settings
from serving.placement.cost import region_tables, window_options
from serving.placement.exact import solve_exact
from serving.placement.heuristic import solve_heuristic
from serving.placement.inputs import read_inputs
from serving.placement.plan import (
    REQUEST_COLUMNS,
    UNPLACED_COLUMNS,
    Plan,
    unknown_users_frame,
    window_frames,
)
from serving.placement.polish import polish
from serving.placement.problem import Problem, Solution
from serving.placement.windows import window_demand


def plan_placement(
    profiles: pd.DataFrame,
    region_probs: pd.DataFrame,
    current: pd.DataFrame,
    capacity: pd.DataFrame | None = None,
    settings: Settings | None = None,
    measured_latency: pd.DataFrame | None = None,
    *,
    now: datetime,
) -> Plan:
    """Plan every user's region and allocation per window of the horizon; act on nothing.

    ``profiles`` and ``region_probs`` follow the predicted-profile contract; ``current`` has
    ``user_id``, ``current_region`` and the held allocation (zeros where none); ``capacity``
    has ``region`` and what is still free of each resource (default: the catalogue's
    capacity); ``measured_latency`` has ``user_id``, ``region``, ``latency_ms``. Forecast hours
    already over at ``now`` are left out; users ``current`` lacks are reported in ``unplaced``.
    Raises PlacementInputError (a ValueError) on malformed input.
    """
    settings = settings or get_settings()
    started = time.perf_counter()
    catalogue = load_regions(settings.regions_file)
    inputs = read_inputs(profiles, region_probs, current, capacity, measured_latency,
                         catalogue, now)
    tables = region_tables(catalogue, settings)
    requests, unplaced, windows = [], [unknown_users_frame(inputs.unknown_users)], []
    demands = window_demand(inputs, settings.placement, len(catalogue))
    for index in range(demands.n_windows):
        demand = demands.window(index)
        if demand.n_users == 0:
            continue
        options = window_options(demand, inputs, tables, settings)
        solution = solve(options.problem, settings)
        frames = window_frames(demand, options, solution, inputs.user_ids, catalogue, settings)
        requests.append(frames[0])
        unplaced.append(frames[1])
        windows.append(frames[2])
    plan_requests = _concat(requests, REQUEST_COLUMNS)
    summary: dict[str, Any] = {
        "planned_at": pd.Timestamp(now).tz_convert("UTC").isoformat(),
        "users": inputs.n_users,
        "windows": windows,
        "requests": len(plan_requests),
        "actions": {k: int(v) for k, v in plan_requests["action"].value_counts().items()},
        "unplaced": int(sum(len(u) for u in unplaced)),
        "objective_usd": round(sum(w["objective_usd"] for w in windows), 4),
        "past_steps_dropped": inputs.past_steps_dropped,
        "users_without_current_region": len(inputs.unknown_users),
        "user_windows_without_forecast": inputs.n_users * len(windows) - len(plan_requests)
        - int(sum(len(u) for u in unplaced[1:])),
        "latency_slo_ms": settings.latency_slo_ms,
        "settings": settings.placement.model_dump(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return Plan(requests=plan_requests, unplaced=_concat(unplaced, UNPLACED_COLUMNS),
                summary=summary)


def solve(problem: Problem, settings: Settings) -> Solution:
    """Solve one window with the configured solver (``auto``: exact up to exact_max_users).

    When HiGHS stops at its time limit without proving optimality, the heuristic runs too and
    the cheaper of the two is kept. ``solver`` "exact" or "heuristic" forces one.
    """
    placement = settings.placement
    exact = placement.solver == "exact" or (
        placement.solver == "auto" and problem.n_users <= placement.exact_max_users
    )
    if exact:
        solution = solve_exact(problem, placement.exact_time_limit_s, placement.exact_mip_gap)
        if solution.status in ("optimal", "empty"):
            return solution
    fast = solve_heuristic(problem, placement.heuristic_passes, placement.heuristic_price_rounds,
                           placement.heuristic_target_gap, placement.heuristic_rescues)
    if placement.polish_time_limit_s > 0:
        fast = polish(problem, fast, placement.exact_max_users, placement.polish_time_limit_s,
                      placement.exact_mip_gap)
    return solution if exact and solution.objective <= fast.objective else fast


def _concat(frames: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(frames, ignore_index=True)
