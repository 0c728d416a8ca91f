"""Polishing a heuristic solution exactly where it left users unplaced.

Greedy packing is weakest where a region cannot hold everyone who wants it: which users to
fit is a small multi-dimensional knapsack, and a greedy order can waste room (one big user
where two smaller ones would fit). So the users of the regions that unplaced users could have
taken, together with those unplaced users, are re-solved exactly by HiGHS, against the room the
other users leave; when that sub-problem is small enough, its optimum replaces their part of
the solution if it is cheaper. Everybody else keeps their choice.
"""

from __future__ import annotations

import time

import numpy as np

from serving.placement.exact import solve_exact
from serving.placement.problem import Problem, Solution


def polish(
    problem: Problem, solution: Solution, max_users: int, time_limit_s: float, mip_gap: float
) -> Solution:
    """``solution`` with its contested part re-solved exactly, when that helps."""
    started = time.perf_counter()
    choice = solution.choice
    unplaced = choice == problem.n_regions
    if not unplaced.any():
        return solution
    contested = np.isfinite(problem.cost[unplaced]).any(axis=0)
    users = np.flatnonzero(unplaced | np.isin(choice, np.flatnonzero(contested)))
    if len(users) > max_users:
        return solution
    others = np.ones(problem.n_users, dtype=bool)
    others[users] = False
    kept = np.where(others, choice, problem.n_regions)  # the rest, as they are
    room = np.maximum(problem.capacity - problem.load(kept), 0.0)
    part = Problem(
        cost=problem.cost[users],
        need=problem.need[users],
        increment=problem.increment[users],
        current=problem.current[users],
        capacity=room,
        unplaced_cost=problem.unplaced_cost[users],
    )
    exact = solve_exact(part, time_limit_s, mip_gap)
    polished = choice.copy()
    polished[users] = exact.choice
    objective = problem.objective(polished)
    if objective >= solution.objective or problem.overloaded(polished).any():
        return solution
    return Solution(
        choice=polished,
        objective=objective,
        solver=solution.solver,
        status=f"{solution.status}; polished {len(users)} users exactly ({exact.status})",
        seconds=solution.seconds + time.perf_counter() - started,
        bound=solution.bound,
    )
