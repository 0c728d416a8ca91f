"""plan_placement: explained decisions per user and window, within capacity, on checked input."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from core.schema import RESOURCE_COLUMNS
from core.settings import Settings, get_settings
from serving.placement import PlacementInputError, plan_placement, write_plan
from tests.serving.placement.builders import NOW, UNIT_DEMAND, User, build, capacity, crowd

CLUSTER = [
    "aws-us-east-1", "aws-us-east-2", "azure-eastus",
    "aws-eu-west-1", "aws-eu-west-2", "aws-eu-central-1",
]


def _settings(**placement: object) -> Settings:
    settings = get_settings()
    return settings.model_copy(
        update={"placement": settings.placement.model_copy(update=placement)}
    )


def _plan(users: list[User], settings: Settings | None = None, **kwargs: object):
    inputs = build(users)
    return plan_placement(inputs.profiles, inputs.region_probs, inputs.current,
                          settings=settings, now=NOW, **kwargs)


def _only(plan, user_id: str) -> pd.Series:
    rows = plan.requests[plan.requests["user_id"] == user_id]
    assert len(rows) == 1
    return rows.iloc[0]


def test_a_traveller_gets_a_preallocation_at_the_destination_with_its_explanation() -> None:
    plan = _plan([User("traveller", home="aws-us-east-1", trip="aws-ap-northeast-1")])
    row = _only(plan, "traveller")
    assert row["action"] == "preallocate"
    assert row["region"] == "aws-ap-northeast-1"
    assert row["current_region"] == "aws-us-east-1"
    assert row["location_probability"] == pytest.approx(0.9, abs=0.02)
    assert row["expected_latency_gain_ms"] > 50
    assert row["expected_cost_usd"] > 0
    assert row["reason"].startswith("move: 90% likely where aws-ap-northeast-1")
    assert "aws-us-east-1" in row["reason"]


def test_a_stay_at_home_user_within_the_allocation_held_is_kept() -> None:
    plan = _plan([User("homebody", home="aws-eu-west-1", held=10.0)])
    row = _only(plan, "homebody")
    assert row["action"] == "keep"
    assert row["region"] == "aws-eu-west-1"
    assert row["expected_latency_gain_ms"] == 0
    assert row["reason"].startswith("keep in aws-eu-west-1")


def test_a_user_outgrowing_the_allocation_gets_more_where_they_are() -> None:
    plan = _plan([User("grower", home="aws-eu-west-1", size=2.0, held=1.0)])
    row = _only(plan, "grower")
    assert row["action"] == "preallocate"
    assert row["region"] == "aws-eu-west-1"
    # sized at p90 plus the default 15% headroom
    assert row["cpu_cores"] == pytest.approx(2.0 * UNIT_DEMAND[0] * 1.5 * 1.15)
    assert row["reason"].startswith("grow in aws-eu-west-1")
    assert "cpu_cores" in row["reason"]


def test_unassigned_probability_stays_at_the_current_region() -> None:
    half = User("unsure", home="aws-us-east-1", trip="aws-ap-northeast-1",
                trip_probability=0.45)
    row = _only(_plan([half]), "unsure")
    assert row["region"] == "aws-us-east-1"
    assert row["location_probability"] == pytest.approx(0.55, abs=0.02)


def test_a_measured_latency_overrides_the_model_where_the_user_is() -> None:
    user = User("badroute", home="aws-eu-west-1", held=10.0)
    measured = pd.DataFrame(
        {"user_id": ["badroute"], "region": ["aws-eu-west-1"], "latency_ms": [180.0]}
    )
    row = _only(_plan([user], measured_latency=measured), "badroute")
    assert row["region"] != "aws-eu-west-1"
    assert row["action"] == "preallocate"
    assert row["expected_latency_gain_ms"] > 100


SMALL_CAPACITY = [12.0, 6.0, 18.0, 9.0, 14.0, 5.0]  # CLUSTER's regions, in users of size 1


@pytest.mark.parametrize(("solver", "scale"), [("exact", 3.0), ("heuristic", 3.0),
                                               ("heuristic", 1.0)])
def test_no_solver_fills_a_region_beyond_its_capacity(solver: str, scale: float) -> None:
    users = crowd(120, seed=3, regions=CLUSTER)
    inputs = build(users)
    free = capacity(dict(zip(CLUSTER, np.array(SMALL_CAPACITY) * scale, strict=True)))
    unlimited = plan_placement(inputs.profiles, inputs.region_probs, inputs.current, now=NOW)
    assert _exceeds(_capacity_used(unlimited.requests, inputs.current), free), "must bind"

    plan = plan_placement(inputs.profiles, inputs.region_probs, inputs.current, free,
                          _settings(solver=solver, polish_time_limit_s=1.0), now=NOW)
    assert not _exceeds(_capacity_used(plan.requests, inputs.current), free)
    assert len(plan.requests) + len(plan.unplaced) == len(users)


@pytest.mark.parametrize(("users", "seed", "scale"), [(120, 4, 3.0), (120, 5, 3.0), (40, 4, 0.5)])
def test_the_exact_optimum_is_never_worse_than_the_heuristic(users, seed, scale) -> None:
    inputs = build(crowd(users, seed=seed, regions=CLUSTER))
    free = capacity(dict(zip(CLUSTER, np.array(SMALL_CAPACITY) * scale, strict=True)))
    gap = 1e-6
    objective = {}
    for solver in ("exact", "heuristic"):
        plan = plan_placement(inputs.profiles, inputs.region_probs, inputs.current, free,
                              _settings(solver=solver, exact_mip_gap=gap), now=NOW)
        window = plan.summary["windows"][0]
        assert window["solver"] == solver
        assert window["status"].startswith(_status(solver))
        objective[solver] = plan.summary["objective_usd"]
    # HiGHS stops within `gap` of its proven lower bound; the objectives are rounded to 1e-4
    assert objective["exact"] <= objective["heuristic"] * (1 + gap) + 1e-4


def test_users_capacity_cannot_hold_are_reported_with_a_reason() -> None:
    users = [
        User("new", home="aws-sa-east-1", held=0.0),
        User("content", home="aws-sa-east-1", held=10.0),
    ]
    inputs = build(users)
    plan = plan_placement(inputs.profiles, inputs.region_probs, inputs.current,
                          capacity({}, default=0.0), now=NOW)
    assert list(plan.unplaced["user_id"]) == ["new"]
    reason = plan.unplaced.iloc[0]["reason"]
    assert reason.startswith("no capacity") and "aws-sa-east-1 (cpu_cores" in reason
    assert plan.unplaced.iloc[0]["cpu_cores"] > 0
    assert list(plan.requests["user_id"]) == ["content"]
    assert plan.summary["unplaced"] == 1


def test_each_window_of_the_horizon_is_planned_and_past_hours_are_left_out() -> None:
    inputs = build([User("a", home="aws-eu-west-1")], horizon=12)
    settings = _settings(window_hours=6)
    later = NOW + timedelta(hours=3)  # steps 1 and 2 (hours NOW+1h, NOW+2h) are over
    plan = plan_placement(inputs.profiles, inputs.region_probs, inputs.current,
                          settings=settings, now=later)
    assert list(plan.requests["window"]) == [0, 1]
    assert plan.summary["past_steps_dropped"] == 2
    first = plan.requests.iloc[0]
    assert first["window_start"] == pd.Timestamp(NOW + timedelta(hours=1))
    assert first["window_end"] == pd.Timestamp(NOW + timedelta(hours=7))


def test_forecasts_entirely_in_the_past_give_an_empty_plan() -> None:
    inputs = build([User("a", home="aws-eu-west-1")])
    plan = plan_placement(inputs.profiles, inputs.region_probs, inputs.current,
                          now=NOW + timedelta(days=1))
    assert plan.requests.empty and plan.unplaced.empty
    assert list(plan.requests.columns)[:5] == [
        "user_id", "window_start", "window_end", "current_region", "region"
    ]
    assert plan.summary["past_steps_dropped"] == 6


def test_write_plan_stores_the_plan_and_rewrites_it_identically(tmp_path) -> None:
    plan = _plan([User("a", home="aws-us-east-1", trip="aws-eu-west-2"),
                  User("b", home="aws-eu-west-1")])
    folder = write_plan(plan, tmp_path / "plan")
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    write_plan(plan, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    assert sorted(first) == ["plan.parquet", "summary.json", "unplaced.parquet"]
    stored = pd.read_parquet(folder / "plan.parquet")
    assert list(stored["user_id"]) == ["a", "b"]
    assert list(stored["action"]) == ["preallocate", "keep"]
    assert json.loads((folder / "summary.json").read_text())["actions"] == {
        "keep": 1, "preallocate": 1
    }


@pytest.mark.parametrize(
    ("frame", "column", "value", "message"),
    [
        ("region_probs", "region", "aws-mars-1", "unknown region"),
        ("region_probs", "probability", 1.2, "probability must lie in [0, 1]"),
        ("profiles", "cpu_cores_p90", -1.0, "cpu_cores_p90 must be a finite number >= 0"),
        ("profiles", "ram_gb_p50", np.nan, "ram_gb_p50 must be a finite number >= 0"),
        ("current", "current_region", "nowhere", "unknown region"),
        ("current", "cpu_cores", -2.0, "cpu_cores must be a finite number >= 0"),
    ],
)
def test_bad_input_is_rejected_naming_the_problem(frame, column, value, message) -> None:
    inputs = build([User("a", home="aws-us-east-1"), User("b", home="aws-eu-west-1")])
    frames = {"profiles": inputs.profiles.copy(), "region_probs": inputs.region_probs.copy(),
              "current": inputs.current.copy()}
    frames[frame][column] = frames[frame][column].astype(object)
    frames[frame].loc[0, column] = value
    with pytest.raises(ValueError, match=r".*".join(map(_escape, [frame, message]))):
        plan_placement(**frames, now=NOW)


def test_probabilities_of_one_step_may_not_sum_above_one() -> None:
    inputs = build([User("a", home="aws-us-east-1")])
    extra = inputs.region_probs.assign(region="aws-us-east-2", probability=0.5)
    with pytest.raises(PlacementInputError, match="sum to more than 1"):
        plan_placement(inputs.profiles, pd.concat([inputs.region_probs, extra]),
                       inputs.current, now=NOW)


def test_a_region_listed_twice_for_one_step_is_rejected() -> None:
    inputs = build([User("a", home="aws-us-east-1", home_probability=0.4)])
    with pytest.raises(PlacementInputError, match="listed twice"):
        plan_placement(inputs.profiles, pd.concat([inputs.region_probs] * 2),
                       inputs.current, now=NOW)


def test_a_profiled_user_without_a_current_region_is_reported_not_planned() -> None:
    inputs = build([User("a", home="aws-us-east-1"), User("b", home="aws-us-east-1")])
    plan = plan_placement(inputs.profiles, inputs.region_probs, inputs.current.iloc[1:],
                          now=NOW)
    assert list(plan.requests["user_id"]) == ["b"]
    assert list(plan.unplaced["user_id"]) == ["a"]
    assert plan.unplaced.iloc[0]["reason"].startswith("not planned: no current region")
    assert plan.summary["users_without_current_region"] == 1


def _capacity_used(requests: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Capacity each region gives the plan: the full allocation of a user moving in, the growth
    of a user staying."""
    held = current.set_index("user_id").loc[requests["user_id"], list(RESOURCE_COLUMNS)]
    need = requests[list(RESOURCE_COLUMNS)].to_numpy()
    stays = (requests["region"] == requests["current_region"]).to_numpy()[:, None]
    taken = np.where(stays, np.maximum(need - held.to_numpy(), 0.0), need)
    return pd.DataFrame(taken, columns=list(RESOURCE_COLUMNS)).groupby(
        requests["region"].to_numpy()
    ).sum()


def _exceeds(used: pd.DataFrame, free: pd.DataFrame) -> bool:
    limit = free.set_index("region").loc[used.index, list(RESOURCE_COLUMNS)]
    return bool((used > limit * (1 + 1e-6) + 1e-6).any().any())


def _status(solver: str) -> str:
    return "optimal" if solver == "exact" else "feasible"


def _escape(text: str) -> str:
    import re

    return re.escape(text)
