"""The fast solver: capacity prices, a regret-ordered assignment, then improving moves.

1. If every user's cheapest option fits, that is the optimum: done.
2. Assign within capacity, most-constrained users first: each round, every waiting user picks
   their cheapest option that still has room; the half who would lose most by not getting it
   (the regret, second-best minus best) per share of the room they take go, and each region
   takes them in that order while they fit; the rest wait for the next round ("unplaced"
   always has room, so rounds end).
3. Lagrangian pricing (``price_rounds`` subgradient steps) puts a price on each region-
   resource's capacity, high where users crowd in; step 2 is run again on the priced costs,
   which steers big users away from scarce resources. Pricing also yields a lower bound.
4. Improve: users move to a cheaper option that still has room, the largest gains first, for
   up to ``passes`` passes.
5. Rescue: an unplaced user takes a region's place of a user who can move elsewhere (or be
   left out, if that costs less), one at a time, the most valuable first.

Every step works on whole arrays (users x regions); the gap to the exact optimum is measured
by ``benchmarks/placement.py``.
"""

from __future__ import annotations

import time

import numpy as np

from serving.placement.problem import FEASIBILITY_TOLERANCE, Problem, Solution

GAIN_TOLERANCE = 1e-9  # USD: smaller improvements are rounding, not gains


def solve_heuristic(
    problem: Problem,
    passes: int,
    price_rounds: int,
    target_gap: float = 0.0,
    rescues: int = 0,
) -> Solution:
    """A feasible choice close to the optimum, and a lower bound on the optimum.

    Pricing stops once the choice is proven within ``target_gap`` (relative) of the optimum;
    up to ``rescues`` unplaced users are then placed by moving one user out of their way.
    """
    started = time.perf_counter()
    costs = problem.with_unplaced()
    costs[:, :-1][~_fits(problem, _limit(problem.capacity))] = np.inf
    choice = np.argmin(costs, axis=1)
    bound = problem.objective(choice)  # the optimum ignoring capacity bounds the optimum
    if problem.overloaded(choice).any():
        choice = _improved(problem, costs, _assign(problem, costs), passes)
        choice, bound = _priced_search(
            problem, costs, choice, bound, price_rounds, passes, target_gap
        )
        if _rescue(problem, costs, choice, rescues):
            choice = _improved(problem, costs, choice, passes)
    return Solution(
        choice=choice,
        objective=problem.objective(choice),
        solver="heuristic",
        status="feasible",
        seconds=time.perf_counter() - started,
        bound=bound,
    )


def _assign(problem: Problem, costs: np.ndarray) -> np.ndarray:
    """A feasible choice built in rounds, users with the most to lose first (module doc, 2)."""
    n_regions = problem.n_regions
    choice = np.full(problem.n_users, n_regions, dtype=np.int64)
    room = np.vstack([_limit(problem.capacity), np.full(problem.capacity.shape[1], np.inf)])
    waiting = np.arange(problem.n_users)
    while waiting.size:
        options = costs[waiting].copy()
        options[:, :-1][~_fits(problem, room[:-1], waiting)] = np.inf
        rows = np.arange(len(waiting))
        best = np.argmin(options, axis=1)
        best_cost = options[rows, best]
        options[rows, best] = np.inf
        regret = options.min(axis=1) - best_cost
        required = problem.requirement(waiting, best)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(required > 0, required / room[best], 0.0).max(axis=1)
            density = np.where(share > 0, regret / share, np.inf)
        # The denser half goes this round (each region takes them in order while they fit);
        # the rest wait, so that no region fills with big users before denser ones had a go.
        turn = np.flatnonzero(density >= np.sort(density)[(len(density) - 1) // 2])
        turn = turn[np.lexsort((-density[turn], best[turn]))]
        users, targets, required = waiting[turn], best[turn], required[turn]
        taken = _prefix_fitting(targets, required, room)
        choice[users[taken]] = targets[taken]
        for k in range(room.shape[1]):
            room[:-1, k] -= np.bincount(targets[taken], required[taken, k], n_regions + 1)[:-1]
        np.maximum(room, 0.0, out=room)
        waiting = np.setdiff1d(waiting, users[taken], assume_unique=True)
    return choice


def _priced_search(
    problem: Problem,
    costs: np.ndarray,
    best: np.ndarray,
    bound: float,
    rounds: int,
    passes: int,
    target_gap: float,
) -> tuple[np.ndarray, float]:
    """Lagrangian pricing of capacity (module doc, 3): the best choice found and lower bound.

    With a price per share of each region-resource's capacity, every user's cheapest priced
    option, minus the price of all the capacity, bounds the optimum from below; subgradient
    steps raise the prices where users crowd in. Each priced cost matrix is also assigned
    within capacity and improved, and the cheapest feasible choice is kept.
    """
    capacity = np.where(problem.capacity > 0, problem.capacity, 1.0)
    shares = np.zeros(problem.capacity.shape)
    best_objective, scale, stalled = problem.objective(best), 2.0, 0
    users = np.arange(problem.n_users)
    for _ in range(rounds):
        if best_objective - bound <= target_gap * abs(best_objective):
            break
        priced = costs.copy()
        priced[:, :-1] += _price_of(problem, shares / capacity)
        relaxed = np.argmin(priced, axis=1)
        lagrangian = float(priced[users, relaxed].sum() - shares.sum())
        if lagrangian > bound:
            bound, stalled = lagrangian, 0
        else:
            stalled += 1
            if stalled == 2:
                scale, stalled = scale / 2, 0
        if shares.any():
            candidate = _improved(problem, costs, _assign(problem, priced), passes)
            if (objective := problem.objective(candidate)) < best_objective:
                best, best_objective = candidate, objective
        excess = problem.load(relaxed) / capacity - 1.0
        norm = float((excess**2).sum())
        if norm == 0:
            break
        step = scale * max(best_objective - lagrangian, 0.0) / norm
        shares = np.maximum(shares + step * excess, 0.0)
    return best, bound


def _rescue(problem: Problem, costs: np.ndarray, choice: np.ndarray, rescues: int) -> bool:
    """Place unplaced users by moving one user of a candidate region elsewhere (module doc, 5).

    For each unplaced user, most valuable first: in each candidate region, the users whose
    departure would leave room enough, and the cheapest other option each has room in; the
    best net gain is taken. Changes ``choice`` in place; True when anything moved.
    """
    n_regions = problem.n_regions
    unplaced = np.flatnonzero(choice == n_regions)
    if not unplaced.size or rescues == 0:
        return False
    value = costs[unplaced, -1] - costs[unplaced, :-1].min(axis=1)
    room = _limit(problem.capacity) - problem.load(choice)
    moved = False
    for user in unplaced[np.argsort(-value)][:rescues]:
        move = _best_rescue(problem, costs, choice, room, int(user))
        if move is None:
            continue
        region, other, target = move
        for who, where in ((other, target), (user, region)):
            if who < 0:
                continue
            before = int(choice[who])
            if before < n_regions:
                room[before] += problem.requirement(np.array([who]), np.array([before]))[0]
            if where < n_regions:
                room[where] -= problem.requirement(np.array([who]), np.array([where]))[0]
            choice[who] = where
        moved = True
    return moved


def _best_rescue(
    problem: Problem, costs: np.ndarray, choice: np.ndarray, room: np.ndarray, user: int
) -> tuple[int, int, int] | None:
    """(region for ``user``, user moved out of it or -1, where that one goes), or None."""
    best_gain, best = GAIN_TOLERANCE, None
    for region in np.flatnonzero(np.isfinite(costs[user, :-1])):
        required = problem.requirement(np.array([user]), np.array([region]))[0]
        gain = costs[user, -1] - costs[user, region]
        deficit = required - room[region]
        if (deficit <= 0).all():
            if gain > best_gain:
                best_gain, best = gain, (int(region), -1, -1)
            continue
        members = np.flatnonzero(choice == region)
        freed = problem.requirement(members, np.full(len(members), region))
        members = members[(freed >= deficit).all(axis=1)]
        if not members.size:
            continue
        after = np.maximum(room, 0.0)
        options = costs[members].copy()
        options[:, :-1][~_fits(problem, after, members)] = np.inf
        options[:, region] = np.inf
        target = np.argmin(options, axis=1)
        loss = options[np.arange(len(members)), target] - costs[members, region]
        pick = int(np.argmin(loss))
        if gain - loss[pick] > best_gain:
            best_gain = gain - loss[pick]
            best = (int(region), int(members[pick]), int(target[pick]))
    return best


def _price_of(problem: Problem, unit_prices: np.ndarray) -> np.ndarray:
    """What each (user, region) pays at ``unit_prices`` (S, K) for the capacity it takes."""
    priced = problem.need @ unit_prices.T
    users = np.arange(problem.n_users)
    priced[users, problem.current] = (problem.increment * unit_prices[problem.current]).sum(1)
    return priced


def _improved(problem: Problem, costs: np.ndarray, choice: np.ndarray, passes: int) -> np.ndarray:
    """``choice`` after up to ``passes`` rounds of improving moves (changed in place)."""
    for _ in range(passes):
        if not _improve(problem, costs, choice):
            break
    return choice


def _improve(problem: Problem, costs: np.ndarray, choice: np.ndarray) -> bool:
    """Move users to cheaper options with room, largest gains first; False when none moved."""
    users = np.arange(problem.n_users)
    room = np.maximum(_limit(problem.capacity) - problem.load(choice), 0.0)
    reachable = costs.copy()
    reachable[:, :-1][~_fits(problem, room)] = np.inf
    target = np.argmin(reachable, axis=1)
    gain = costs[users, choice] - reachable[users, target]
    movers = np.flatnonzero(gain > GAIN_TOLERANCE)
    if not movers.size:
        return False
    movers = movers[np.lexsort((-gain[movers], target[movers]))]
    required = problem.requirement(movers, target[movers])
    room = np.vstack([room, np.full(room.shape[1], np.inf)])  # "unplaced" has unlimited room
    accepted = _prefix_fitting(target[movers], required, room)
    choice[movers[accepted]] = target[movers[accepted]]
    return bool(accepted.any())


def _fits(problem: Problem, room: np.ndarray, users: np.ndarray | None = None) -> np.ndarray:
    """(users, S): whether each user's requirement in each region fits ``room`` (S, K)."""
    users = np.arange(problem.n_users) if users is None else users
    need, increment, current = problem.need[users], problem.increment[users], problem.current[users]
    fits = np.ones((len(users), problem.n_regions), dtype=bool)
    for k in range(room.shape[1]):
        fits &= need[:, k, None] <= room[None, :, k]
    fits[np.arange(len(users)), current] = (increment <= room[current]).all(axis=1)
    return fits


def _limit(capacity: np.ndarray) -> np.ndarray:
    """Capacity with the floating-point slack every feasibility check allows."""
    return capacity * (1 + FEASIBILITY_TOLERANCE) + FEASIBILITY_TOLERANCE


def _prefix_fitting(groups: np.ndarray, required: np.ndarray, room: np.ndarray) -> np.ndarray:
    """For rows sorted by group, the leading rows of each group that fit its room together."""
    starts = np.r_[True, groups[1:] != groups[:-1]]
    group_of = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    cumulative = np.cumsum(required, axis=0)
    before_group = (cumulative[first] - required[first])[group_of]
    fits = ((cumulative - before_group) <= room[groups]).all(axis=1)
    misfits = np.cumsum(~fits)
    misfits_before_group = (misfits[first] - (~fits)[first])[group_of]
    return misfits == misfits_before_group
