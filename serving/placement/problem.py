"""The capacity-constrained choice both solvers solve, and what a solution is.

Each user picks exactly one option: a candidate region (at its cost) or "unplaced" (at a
penalty). A region's capacity must hold what the users placed there need: the full allocation
for a user coming from elsewhere (the old one is held until the switchover), only the growth
beyond what is already held for a user staying in their current region. ``capacity`` is what
is still free, net of everything already held. Choices are region positions, with
``n_regions`` standing for "unplaced".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEASIBILITY_TOLERANCE = 1e-7  # relative slack on capacity, for floating-point sums


@dataclass(frozen=True, eq=False)
class Problem:
    """Costs (inf where a region is no candidate), requirements and capacity of one window."""

    cost: np.ndarray  # (n, S) USD per option
    need: np.ndarray  # (n, K) full allocation
    increment: np.ndarray  # (n, K) growth beyond the allocation held in the current region
    current: np.ndarray  # (n,) current region
    capacity: np.ndarray  # (S, K) remaining capacity
    unplaced_cost: np.ndarray  # (n,) USD for leaving the user unplaced

    @property
    def n_users(self) -> int:
        """Users to place."""
        return self.cost.shape[0]

    @property
    def n_regions(self) -> int:
        """Regions of the catalogue; also the choice value meaning "unplaced"."""
        return self.capacity.shape[0]

    def with_unplaced(self) -> np.ndarray:
        """The cost matrix with the "unplaced" option as its last column (n, S + 1)."""
        return np.column_stack([self.cost, self.unplaced_cost])

    def requirement(self, users: np.ndarray, regions: np.ndarray) -> np.ndarray:
        """What placing ``users[j]`` in ``regions[j]`` takes from that region's capacity."""
        at_home = (regions == self.current[users])[:, None]
        required = np.where(at_home, self.increment[users], self.need[users])
        return np.where((regions < self.n_regions)[:, None], required, 0.0)

    def load(self, choice: np.ndarray) -> np.ndarray:
        """Capacity taken per region and resource (S, K) by ``choice``."""
        users = np.arange(self.n_users)
        required = self.requirement(users, choice)
        placed = choice < self.n_regions
        return np.stack(
            [
                np.bincount(choice[placed], weights=required[placed, k], minlength=self.n_regions)
                for k in range(self.capacity.shape[1])
            ],
            axis=1,
        )

    def overloaded(self, choice: np.ndarray) -> np.ndarray:
        """Which region-resources ``choice`` fills beyond capacity (S, K) bool."""
        limit = self.capacity * (1 + FEASIBILITY_TOLERANCE) + FEASIBILITY_TOLERANCE
        return self.load(choice) > limit

    def objective(self, choice: np.ndarray) -> float:
        """Total cost of ``choice`` in USD (inf when it picks a non-candidate)."""
        return float(self.with_unplaced()[np.arange(self.n_users), choice].sum())


@dataclass(frozen=True)
class Solution:
    """A choice per user, its objective and how it was found."""

    choice: np.ndarray
    objective: float
    solver: str  # "exact" or "heuristic"
    status: str
    seconds: float
    bound: float | None = None  # a proven lower bound on the optimum (exact solver only)
