"""The placement plan: one explained request per user and window, the unplaced, a summary.

``requests`` follows the plan contract (DESIGN/serving contracts): ``user_id``,
``window_start``, ``window_end``, ``current_region``, ``region``, the four allocation columns,
``location_probability``, ``expected_latency_ms``, ``expected_latency_gain_ms``,
``expected_cost_usd``, ``action`` ("preallocate" or "keep") and ``reason``; plus ``window``,
``slo_violation_probability`` and ``solver``. Users whom capacity leaves without what they need
are in ``unplaced`` with the reason, never dropped; so are users with a forecast but no known
current region (``window`` -1: not planned at all). Placement never acts: :func:`write_plan`
stores a plan (Parquet and JSON) for a dry run or for the step that does act.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.regions import RegionCatalogue
from core.schema import RESOURCE_COLUMNS
from core.settings import Settings
from serving.placement.cost import Options
from serving.placement.problem import FEASIBILITY_TOLERANCE, Problem, Solution
from serving.placement.reasons import Explained, reasons
from serving.placement.windows import WindowDemand

REQUEST_COLUMNS: tuple[str, ...] = (
    "user_id", "window_start", "window_end", "current_region", "region", *RESOURCE_COLUMNS,
    "location_probability", "expected_latency_ms", "expected_latency_gain_ms",
    "expected_cost_usd", "action", "reason", "window", "slo_violation_probability", "solver",
)
UNPLACED_COLUMNS: tuple[str, ...] = (
    "user_id", "window_start", "window_end", "current_region", *RESOURCE_COLUMNS, "window",
    "reason",
)
BINDING_SHARE = 0.99  # a region-resource this full after the plan counts as binding
PLAN_FILE, UNPLACED_FILE, SUMMARY_FILE = "plan.parquet", "unplaced.parquet", "summary.json"


@dataclass(frozen=True, eq=False)
class Plan:
    """What placement recommends; nothing in it has been acted on."""

    requests: pd.DataFrame
    unplaced: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def window_frames(
    demand: WindowDemand,
    options: Options,
    solution: Solution,
    user_ids: np.ndarray,
    catalogue: RegionCatalogue,
    settings: Settings,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The requests, the unplaced and the summary entry of one solved window."""
    problem = options.problem
    choice = options.current.copy()
    choice[options.deciding] = solution.choice
    placed = np.flatnonzero(choice < problem.n_regions)
    unplaced = np.flatnonzero(choice >= problem.n_regions)
    requests = _requests(demand, options, solution, choice, placed, user_ids, catalogue, settings)
    left_out = _unplaced(demand, options, solution, unplaced, user_ids, catalogue)
    summary = {
        "window": demand.index,
        "start": _iso(demand.start_ns.min()),
        "end": _iso(demand.end_ns.max()),
        "users": demand.n_users,
        "decided_users": problem.n_users,
        "solver": solution.solver,
        "status": solution.status,
        "objective_usd": round(solution.objective, 4),
        "lower_bound_usd": None if solution.bound is None else round(solution.bound, 4),
        "solve_seconds": round(solution.seconds, 3),
        "actions": {k: int(v) for k, v in requests["action"].value_counts().items()},
        "unplaced": len(unplaced),
        "binding": _binding(problem, solution.choice, catalogue),
    }
    return requests, left_out, summary


def unknown_users_frame(user_ids: np.ndarray) -> pd.DataFrame:
    """Unplaced rows for users with a forecast but no known current region (window -1)."""
    n = len(user_ids)
    return pd.DataFrame(
        {
            "user_id": np.asarray(user_ids, dtype=object),
            "window_start": pd.DatetimeIndex([pd.NaT] * n, tz="UTC"),
            "window_end": pd.DatetimeIndex([pd.NaT] * n, tz="UTC"),
            "current_region": np.full(n, None, dtype=object),
            **{name: np.full(n, np.nan) for name in RESOURCE_COLUMNS},
            "window": np.full(n, -1, dtype=np.int64),
            "reason": pd.array(
                ["not planned: no current region is known for the user (no serving region "
                 "in telemetry, no reservation)"] * n,
                dtype="string[pyarrow]",
            ),
        }
    )[list(UNPLACED_COLUMNS)]


def write_plan(plan: Plan, folder: Path) -> Path:
    """Store ``plan`` in ``folder``: plan.parquet, unplaced.parquet, then summary.json.

    Each file is written under a temporary name and renamed, and the summary comes last, so a
    folder with a summary holds a whole plan; writing the same plan again gives the same files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic(folder / PLAN_FILE, lambda tmp: plan.requests.to_parquet(tmp, index=False))
    _atomic(folder / UNPLACED_FILE, lambda tmp: plan.unplaced.to_parquet(tmp, index=False))
    text = json.dumps(plan.summary, indent=2, sort_keys=True, default=str) + "\n"
    _atomic(folder / SUMMARY_FILE, lambda tmp: tmp.write_text(text))
    return folder


def _requests(
    demand: WindowDemand,
    options: Options,
    solution: Solution,
    choice: np.ndarray,
    rows: np.ndarray,
    user_ids: np.ndarray,
    catalogue: RegionCatalogue,
    settings: Settings,
) -> pd.DataFrame:
    placed_choice = np.where(choice < options.problem.n_regions, choice, options.current)
    there, here = options.at(placed_choice), options.at_current
    region, current = choice[rows], options.current[rows]
    moves, grows = region != current, options.growing[rows]
    stays_away = ~moves & ~grows & options.moving[rows]
    codes = np.asarray(catalogue.codes, dtype=object)
    gain = here.latency_ms[rows] - there.latency_ms[rows]
    explained = Explained(
        region=codes[region],
        current=codes[current],
        probability=there.location_probability[rows],
        probability_current=here.location_probability[rows],
        latency_ms=there.latency_ms[rows],
        gain_ms=gain,
        cost_usd=there.money_usd[rows],
        hours=demand.hours[rows],
        grown=_grown_resources(demand, options, rows),
        kind=np.select([moves, grows, stays_away], [0, 1, 2], default=3),
    )
    placement = settings.placement
    sized = f"{placement.allocation_quantile}+{placement.headroom:.0%}"
    frame = pd.DataFrame(
        {
            "user_id": user_ids[demand.users[rows]],
            "window_start": _timestamps(demand.start_ns[rows]),
            "window_end": _timestamps(demand.end_ns[rows]),
            "current_region": explained.current,
            "region": explained.region,
            **{name: demand.need[rows, k] for k, name in enumerate(RESOURCE_COLUMNS)},
            "location_probability": explained.probability,
            "expected_latency_ms": explained.latency_ms,
            "expected_latency_gain_ms": gain,
            "expected_cost_usd": explained.cost_usd,
            "action": np.where(moves | grows, "preallocate", "keep").astype(object),
            "reason": reasons(explained, settings.latency_slo_ms, sized).array,
            "window": demand.index,
            "slo_violation_probability": there.violation_hours[rows] / demand.hours[rows],
            "solver": np.where(options.deciding[rows], solution.solver, "fixed").astype(object),
        }
    )
    return frame[list(REQUEST_COLUMNS)]


def _grown_resources(demand: WindowDemand, options: Options, rows: np.ndarray) -> np.ndarray:
    """Per request, the names of the resources whose need exceeds what is held."""
    grown = np.zeros((demand.n_users, len(RESOURCE_COLUMNS)), dtype=bool)
    grown[options.deciding] = options.problem.increment > 0
    names = np.array(
        [", ".join(n for k, n in enumerate(RESOURCE_COLUMNS) if mask >> k & 1)
         for mask in range(1 << len(RESOURCE_COLUMNS))],
        dtype=object,
    )
    return names[grown[rows] @ (1 << np.arange(len(RESOURCE_COLUMNS)))]


def _unplaced(
    demand: WindowDemand,
    options: Options,
    solution: Solution,
    rows: np.ndarray,
    user_ids: np.ndarray,
    catalogue: RegionCatalogue,
) -> pd.DataFrame:
    problem = options.problem
    codes = np.asarray(catalogue.codes, dtype=object)
    decided = np.cumsum(options.deciding) - 1  # window position -> position in the problem
    room = problem.capacity - problem.load(solution.choice)
    texts = [_unplaced_reason(problem, int(decided[i]), room, codes) for i in rows]
    frame = pd.DataFrame(
        {
            "user_id": user_ids[demand.users[rows]],
            "window_start": _timestamps(demand.start_ns[rows]),
            "window_end": _timestamps(demand.end_ns[rows]),
            "current_region": codes[options.current[rows]],
            **{name: demand.need[rows, k] for k, name in enumerate(RESOURCE_COLUMNS)},
            "window": demand.index,
            "reason": pd.array(texts, dtype="string[pyarrow]"),
        }
    )
    return frame[list(UNPLACED_COLUMNS)]


def _unplaced_reason(problem: Problem, user: int, room: np.ndarray, codes: np.ndarray) -> str:
    """Which candidate regions lacked room for the user, and in which resources."""
    candidates = np.flatnonzero(np.isfinite(problem.cost[user]))
    required = problem.requirement(np.full(len(candidates), user), candidates)
    short = required > room[candidates] * (1 + FEASIBILITY_TOLERANCE) + FEASIBILITY_TOLERANCE
    lacking = [
        f"{codes[s]} ({', '.join(np.asarray(RESOURCE_COLUMNS)[short[j]])})"
        for j, s in enumerate(candidates)
        if short[j].any()
    ]
    return (
        "no capacity: every candidate region within reach lacks room for the allocation "
        f"needed: {'; '.join(lacking) or 'none'}; the user keeps what they hold"
    )


def _binding(problem: Problem, choice: np.ndarray, catalogue: RegionCatalogue) -> list[str]:
    """Region-resources filled to at least BINDING_SHARE of their remaining capacity."""
    load = problem.load(choice) if problem.n_users else np.zeros_like(problem.capacity)
    full = (load >= BINDING_SHARE * problem.capacity) & (load > 0)
    regions, resources = np.nonzero(full)
    return [
        f"{catalogue.codes[s]}:{RESOURCE_COLUMNS[k]}"
        for s, k in zip(regions, resources, strict=True)
    ]


def _timestamps(ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(ns.astype("datetime64[ns]")).tz_localize("UTC")


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat()


def _atomic(target: Path, write: Any) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    write(tmp)
    os.replace(tmp, target)
