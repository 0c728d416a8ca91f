"""The exact solver: the placement problem as a 0/1 program, solved by HiGHS (scipy.optimize.milp).

One binary variable per candidate (user, region) pair and one per user for "unplaced"; each
user takes exactly one; each region-resource row bounds the requirements placed there by the
remaining capacity (rows are scaled by that capacity, so that CPU cores and millions of IOPS
look alike to the solver). The constraint matrices are sparse.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from serving.placement.problem import Problem, Solution


def solve_exact(problem: Problem, time_limit_s: float, mip_gap: float) -> Solution:
    """The optimal choice (to ``mip_gap``), or HiGHS's best one when the time limit stops it."""
    started = time.perf_counter()
    n, n_regions = problem.n_users, problem.n_regions
    if n == 0:
        return Solution(np.zeros(0, dtype=np.int64), 0.0, "exact", "empty", 0.0, 0.0)
    users, regions = np.nonzero(np.isfinite(problem.cost))
    n_pairs = len(users)
    n_vars = n_pairs + n
    costs = np.concatenate([problem.cost[users, regions], problem.unplaced_cost])

    one_each = csr_array(
        (np.ones(n_vars), (np.concatenate([users, np.arange(n)]), np.arange(n_vars))),
        shape=(n, n_vars),
    )
    result = milp(
        costs,
        integrality=np.ones(n_vars),
        bounds=Bounds(0, 1),
        constraints=[
            LinearConstraint(one_each, 1, 1),
            _capacity_rows(problem, users, regions, n_vars),
        ],
        options={"time_limit": time_limit_s, "mip_rel_gap": mip_gap, "presolve": True},
    )
    if result.x is None:
        raise RuntimeError(f"HiGHS found no placement ({result.message})")
    chosen = result.x[:n_pairs] > 0.5
    choice = np.full(n, n_regions, dtype=np.int64)
    choice[users[chosen]] = regions[chosen]
    bound = getattr(result, "mip_dual_bound", None)
    return Solution(
        choice=choice,
        objective=problem.objective(choice),
        solver="exact",
        status="optimal" if result.status == 0 else result.message,
        seconds=time.perf_counter() - started,
        bound=float(bound) if bound is not None and np.isfinite(bound) else None,
    )


def _capacity_rows(
    problem: Problem, users: np.ndarray, regions: np.ndarray, n_vars: int
) -> LinearConstraint:
    """Sum of requirements placed in a region <= its remaining capacity, one row per resource."""
    n_resources = problem.capacity.shape[1]
    capacity = problem.capacity.ravel()
    scale = np.where(capacity > 0, 1.0 / np.where(capacity > 0, capacity, 1.0), 1.0)
    required = problem.requirement(users, regions)
    row = regions[:, None] * n_resources + np.arange(n_resources)[None, :]
    column = np.broadcast_to(np.arange(len(users))[:, None], row.shape)
    values = required * scale[row]
    nonzero = values > 0
    matrix = csr_array(
        (values[nonzero], (row[nonzero], column[nonzero])),
        shape=(len(capacity), n_vars),
    )
    return LinearConstraint(matrix, -np.inf, np.where(capacity > 0, 1.0, 0.0))
