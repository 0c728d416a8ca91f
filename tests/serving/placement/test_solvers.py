"""The two solvers on random capacity-constrained problems: feasible, ordered, bounded."""

from __future__ import annotations

import numpy as np
import pytest

from serving.placement.exact import solve_exact
from serving.placement.heuristic import solve_heuristic
from serving.placement.polish import polish
from serving.placement.problem import Problem
from serving.placement.windows import shortfall_probability


def random_problem(n: int, n_regions: int, seed: int, tightness: float) -> Problem:
    """Users with random shapes, a few candidate regions each, capacity ``tightness`` x demand."""
    rng = np.random.default_rng(seed)
    need = rng.lognormal(0.0, 0.6, (n, 1)) * rng.lognormal(0.0, 0.3, (n, 4))
    held = need * rng.uniform(0.0, 1.2, (n, 1))
    current = rng.integers(0, n_regions, n)
    cost = rng.uniform(1.0, 5.0, (n, n_regions))
    cost[rng.random((n, n_regions)) < 0.5] = np.inf
    cost[np.arange(n), current] = rng.uniform(1.0, 5.0, n)
    capacity = need.sum(axis=0) / n_regions * tightness * rng.uniform(0.3, 1.7, (n_regions, 1))
    capacity[0] = 0.0  # one region is full
    return Problem(
        cost=cost,
        need=need,
        increment=np.maximum(need - held, 0.0),
        current=current,
        capacity=capacity,
        unplaced_cost=np.full(n, 50.0),
    )


@pytest.mark.parametrize("seed", range(12))
def test_the_heuristic_never_exceeds_capacity(seed: int) -> None:
    problem = random_problem(300, 6, seed, tightness=[0.3, 0.8, 1.5][seed % 3])
    solution = solve_heuristic(problem, passes=8, price_rounds=10)
    assert not problem.overloaded(solution.choice).any()
    placed = solution.choice < problem.n_regions
    assert np.isfinite(problem.cost[placed, solution.choice[placed]]).all()


@pytest.mark.parametrize("seed", range(4))
def test_exact_lies_between_the_heuristics_bound_and_its_objective(seed: int) -> None:
    problem = random_problem(40, 4, seed, tightness=0.8)
    fast = solve_heuristic(problem, passes=8, price_rounds=10)
    best = solve_exact(problem, time_limit_s=30, mip_gap=0.0)
    assert best.status == "optimal"
    assert not problem.overloaded(best.choice).any()
    assert fast.bound <= best.objective + 1e-6
    assert best.objective <= fast.objective + 1e-6


@pytest.mark.parametrize("seed", range(3))
def test_polishing_keeps_capacity_and_never_costs_more(seed: int) -> None:
    problem = random_problem(30, 4, seed, tightness=0.4)
    fast = solve_heuristic(problem, passes=8, price_rounds=10)
    assert (fast.choice == problem.n_regions).any(), "the instance must leave users unplaced"
    polished = polish(problem, fast, max_users=1000, time_limit_s=2, mip_gap=1e-4)
    assert not problem.overloaded(polished.choice).any()
    assert polished.objective <= fast.objective
    assert polished.bound is not None and polished.bound <= polished.objective + 1e-6


def test_without_binding_capacity_everyone_gets_their_cheapest_option() -> None:
    problem = random_problem(200, 5, seed=1, tightness=100.0)
    problem.capacity[0] = 1e9
    solution = solve_heuristic(problem, passes=8, price_rounds=10)
    assert solution.choice.tolist() == np.argmin(problem.cost, axis=1).tolist()
    assert solution.bound == pytest.approx(solution.objective)


def test_shortfall_follows_the_forecast_quantiles() -> None:
    p50, p90 = np.array([[2.0, 0.0]]), np.array([[4.0, 0.0]])
    assert shortfall_probability(np.array([[2.0, 0.0]]), p50, p90) == pytest.approx([0.5])
    assert shortfall_probability(np.array([[4.0, 0.0]]), p50, p90) == pytest.approx([0.1])
    assert shortfall_probability(np.array([[8.0, 1.0]]), p50, p90)[0] < 0.01
    # no spread: demand is exactly p50
    assert shortfall_probability(np.array([[1.0]]), np.array([[2.0]]), np.array([[2.0]])) == 1.0
