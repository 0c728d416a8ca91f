"""`prewarm demo` end to end on a tiny world: the four DAGs with Airflow, the router, evaluate."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from core.settings import get_settings
from prewarm.cli import app
from prewarm.demo import DAG_ORDER


@pytest.fixture
def tiny_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """A world small enough to run the whole chain in a few minutes on two cores."""
    for name, value in {
        "PREWARM_DEMO__USERS": "12",
        "PREWARM_DEMO__DAYS": "9",  # the LSTM reads 7 days and holds out one
        "PREWARM_DEMO__EPOCHS": "1",
        "PREWARM_DEMO__EVAL_DAYS": "1",
        # The baselines only: the predictive policy has its own tests and takes longer.
        "PREWARM_DEMO__EVAL_POLICIES": '["static", "reactive", "oracle"]',
        "PREWARM_LSTM__SAMPLES_PER_EPOCH": "1000",
        "PREWARM_LSTM__VALIDATION_WINDOWS": "500",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


@pytest.mark.slow
def test_demo_runs_the_four_dags_with_the_router_then_evaluates(tiny_demo) -> None:
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    for dag_id in DAG_ORDER:
        assert f"{dag_id}" in result.output
    assert result.output.count("success") >= len(DAG_ORDER), result.output
    settings = get_settings()
    home = settings.home
    # Every stage left its mark: ingested batch, registered champion, a pushed routing config,
    # router feedback ingested, evaluation results for the policies the evaluator knows.
    assert list((home / "ingest" / "batches").glob("*.json"))
    assert (home / "mlflow" / "mlflow.db").exists()
    configs = list((home / "serving" / "plans").glob("*/routing_config.json"))
    assert configs, "predict_and_provision wrote no routing config"
    assert list((home / "serving" / "feedback" / "done").iterdir()), "no feedback ingested"
    results = json.loads((home / "evaluation" / "results.json").read_text())
    assert {"static", "reactive", "oracle"} <= set(results["policies"])
    for name in results["policies"]:
        assert name in result.output
    assert "make up" in result.output
    # DAG logs went to files, not to the terminal.
    assert "Marking run" not in result.output
    for dag_id in DAG_ORDER:
        log = home / "airflow" / "logs" / "prewarm" / f"{dag_id}.log"
        assert "PREWARM_DAG_RESULT" in log.read_text()
