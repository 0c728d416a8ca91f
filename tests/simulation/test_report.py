"""report.html and the MLflow run of an evaluation written to a folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.settings import Settings
from simulation.evaluate import evaluate
from training import registry


def test_an_evaluation_with_an_output_folder_writes_its_report_and_logs_one_mlflow_run(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "home")
    settings = settings.model_copy(
        update={"evaluation": settings.evaluation.model_copy(update={"train_days": 2})}
    )
    out = tmp_path / "eval"
    policies = ["static", "reactive", "oracle"]

    results = evaluate(30, 2, 4, policies, out=out, settings=settings)

    page = (out / "report.html").read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 4
    for name in policies:
        assert f"<tr><th>{name}</th>" in page
    assert json.loads((out / "results.json").read_text()) == results

    client = registry.client(settings)
    experiment = client.get_experiment_by_name(settings.evaluation.mlflow_experiment)
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.params["seed"] == "4" and run.data.params["policies"] == ",".join(policies)
    for name in policies:
        logged = run.data.metrics[f"{name}.slo_violation_minutes"]
        assert logged == results["policies"][name]["slo_violation_minutes"]
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"report.html", "results.json"}


def test_without_an_output_folder_nothing_is_written_or_logged(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    settings = settings.model_copy(
        update={"evaluation": settings.evaluation.model_copy(update={"train_days": 2})}
    )
    evaluate(10, 1, 4, ["static"], settings=settings)
    assert not (tmp_path / "home" / "mlflow").exists()
