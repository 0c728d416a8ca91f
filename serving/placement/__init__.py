"""The Resource Prediction Engine: the best region and allocation per user and window.

Public entry points: :func:`plan_placement` (profiles in, :class:`Plan` out) and
:func:`write_plan` (a plan to Parquet and JSON, for a dry run or for the step that acts).
The modules, in the order data flows through them: ``inputs`` (checks), ``windows`` (steps to
windows), ``cost`` (the cost and latency model), ``problem``, ``exact`` (HiGHS),
``heuristic`` and ``polish`` (the solvers), ``plan`` and ``reasons`` (explained requests),
``planner`` (the whole).
"""

from serving.placement.inputs import PlacementInputError
from serving.placement.plan import Plan, write_plan
from serving.placement.planner import plan_placement

__all__ = ["PlacementInputError", "Plan", "plan_placement", "write_plan"]
