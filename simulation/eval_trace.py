"""What one policy did, step by step, in a closed-loop evaluation: the report's raw material.

The engine fills a :class:`PolicyTrace` when it is given one (``Engine.run(policy, trace)``):
per user and evaluation step the region serving at the step's end, the region the policy asked
for, its CPU allocation; per region the warm vCPU the policy held. Arrays start at the
evaluation's first step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.eval_policy import NO_REGION, Decision


@dataclass
class PolicyTrace:
    """Per-step record of one policy (arrays over the evaluation range)."""

    served: np.ndarray  # (users, steps) int16: region serving at the step's end
    target: np.ndarray  # (users, steps) int16: region the policy decided on
    allocation_cpu: np.ndarray  # (users, steps) float32: vCPU the policy allocated
    warm_vcpu: np.ndarray  # (regions, steps) float32: vCPU held warm in each region

    @classmethod
    def empty(cls, users: int, steps: int, regions: int) -> PolicyTrace:
        """A trace for ``steps`` evaluation steps, nothing recorded yet."""
        return cls(
            served=np.full((users, steps), NO_REGION, np.int16),
            target=np.full((users, steps), NO_REGION, np.int16),
            allocation_cpu=np.zeros((users, steps), np.float32),
            warm_vcpu=np.zeros((regions, steps), np.float32),
        )

    def add(self, index: int, decision: Decision, served: np.ndarray) -> None:
        """Record evaluation step ``index``: the decision and where users were served after it."""
        self.served[:, index] = served
        self.target[:, index] = decision.region
        self.allocation_cpu[:, index] = decision.allocation[:, 0]
        held = decision.warm_region != NO_REGION
        self.warm_vcpu[:, index] = np.bincount(
            decision.warm_region[held],
            decision.warm_allocation[held, 0],
            minlength=self.warm_vcpu.shape[0],
        )
