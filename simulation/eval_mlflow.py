"""An evaluation as an MLflow run: its parameters, every policy's metrics, the report.

One run per ``prewarm evaluate`` with an output folder, in the experiment
``settings.evaluation.mlflow_experiment``, beside the training runs: a reviewer compares the
policies in the MLflow UI (metrics ``<policy>.<metric>``) and opens ``report.html`` from the
run's artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag

from core.settings import Settings
from training import registry


def log_evaluation(
    results: Mapping, params: Mapping[str, object], files: list[Path], settings: Settings
) -> str:
    """Log one evaluation run; its run id."""
    client = registry.client(settings)
    name = settings.evaluation.mlflow_experiment
    found = client.get_experiment_by_name(name)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = None  # a tracking server keeps artifacts where it is configured to
        if settings.mlflow_tracking_uri.startswith("sqlite:///"):
            location = (settings.home / "mlflow" / "artifacts").resolve().as_uri()
        experiment_id = client.create_experiment(name, artifact_location=location)
    run = client.create_run(experiment_id, run_name=f"evaluate-seed{params.get('seed')}")
    run_id = run.info.run_id
    metrics = [
        Metric(f"{policy}.{key}", float(value), 0, 0)
        for policy, values in results["policies"].items()
        for key, value in values.items()
    ]
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(key, str(value)) for key, value in params.items()],
        tags=[RunTag("prewarm.kind", "closed-loop evaluation")],
    )
    for path in files:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return run_id
