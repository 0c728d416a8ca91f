"""The closed-loop evaluation: contract, determinism, and the ordering of the policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import Settings
from prewarm.cli import app
from simulation.eval_provisioning import COUNTS
from simulation.evaluate import evaluate

METRICS = {
    "user_minutes",
    "slo_violation_minutes",
    "unmet_demand_fraction",
    "served_resource_hours",
    "idle_warm_resource_hours",
    "cost_usd",
    "migrations",
    "p95_latency_ms",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    settings = Settings(home=tmp_path_factory.mktemp("eval-home"))
    settings = settings.model_copy(
        update={"evaluation": settings.evaluation.model_copy(update={"train_days": 2})}
    )
    return evaluate(40, 2, 5, ["static", "reactive", "oracle"], settings=settings)


BREAKDOWN = {
    "latency_violation_minutes",
    "demand_violation_minutes",
    "unavoidable_violation_minutes",
    "capacity_refusals",
    "capacity_refused_moves",
    "capacity_refused_warm_holds",
    "capacity_refused_growth",
    "orphaned_resources",
} | {f"reservations_{name}" for name in COUNTS}


def test_every_policy_reports_every_contract_metric(results: dict) -> None:
    for name in ("static", "reactive", "oracle"):
        assert set(results["policies"][name]) == METRICS | BREAKDOWN


def test_violations_break_down_into_latency_and_demand(results: dict) -> None:
    for metrics in results["policies"].values():
        total = metrics["slo_violation_minutes"]
        latency, demand = metrics["latency_violation_minutes"], metrics["demand_violation_minutes"]
        assert max(latency, demand) <= total <= latency + demand
        assert metrics["unavoidable_violation_minutes"] <= latency


def test_all_policies_serve_the_same_user_minutes(results: dict) -> None:
    minutes = {m["user_minutes"] for m in results["policies"].values()}
    assert len(minutes) == 1 and minutes.pop() > 0


def test_static_never_moves_nor_holds_warm(results: dict) -> None:
    static = results["policies"]["static"]
    assert static["migrations"] == 0
    assert static["idle_warm_resource_hours"] == 0


def test_oracle_bounds_reactive_and_static(results: dict) -> None:
    policies = results["policies"]
    oracle = policies["oracle"]
    for other in ("static", "reactive"):
        assert oracle["slo_violation_minutes"] <= policies[other]["slo_violation_minutes"]
    assert oracle["unmet_demand_fraction"] == 0.0
    assert oracle["demand_violation_minutes"] == 0.0
    assert (
        policies["reactive"]["slo_violation_minutes"] < policies["static"]["slo_violation_minutes"]
    )


def test_every_reservation_is_released_once_and_the_provider_keeps_nothing(results: dict) -> None:
    for metrics in results["policies"].values():
        ended = sum(
            metrics[f"reservations_{name}"]
            for name in COUNTS
            if name.startswith("released_") or name in ("expired", "refused_activation")
        )
        assert ended == metrics["reservations_requested"]
        assert metrics["orphaned_resources"] == 0
        # A move completes only once its reservation was activated.
        assert metrics["reservations_activated"] >= metrics["migrations"]
    assert results["policies"]["static"]["reservations_requested"] == 0
    assert results["policies"]["reactive"]["reservations_activated"] > 0


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        evaluate(2, 1, 1, ["static", "clairvoyant"])


def test_cli_writes_the_same_results_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREWARM_EVALUATION__TRAIN_DAYS", "1")
    runner = CliRunner()
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        args = ["evaluate", "--users", "8", "--days", "1", "--seed", "3", "--out", str(out)]
        result = runner.invoke(app, [*args, "--policies", "static,reactive,oracle"])
        assert result.exit_code == 0, result.output
        outputs.append(json.loads((out / "results.json").read_text()))
        for policy in ("static", "reactive", "oracle"):
            assert (out / "ledgers" / policy / "ledger.sqlite").is_file()
    assert outputs[0] == outputs[1]
    assert set(outputs[0]["policies"]) == {"static", "reactive", "oracle"}


def test_cli_rejects_unknown_policy_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", "--users", "2", "--days", "1", "--out", str(tmp_path), "--policies", "x"]
    )
    assert result.exit_code == 2
    assert not (tmp_path / "results.json").exists()
