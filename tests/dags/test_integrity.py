"""DAG integrity: every DAG file imports cleanly and follows the project's conventions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.dags.conftest import DAGS_FOLDER

EXPECTED_DAGS = {"telemetry_ingest", "nightly_retrain", "predict_and_provision", "feedback_collect"}
HEAVY_MODULES = {"pandas", "numpy", "torch", "feast", "mlflow", "great_expectations", "sklearn"}
PROJECT_PACKAGES = {"core", "features", "training", "serving", "simulation", "prewarm"}


def test_dag_files_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_expected_dags_are_present(dagbag) -> None:
    assert set(dagbag.dag_ids) >= EXPECTED_DAGS


def test_every_dag_is_documented_tagged_and_retried(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id} lacks doc_md"
        assert "prewarm" in dag.tags, f"{dag_id} lacks the prewarm tag"
        assert dag.max_active_runs == 1, f"{dag_id} may run concurrently with itself"
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


@pytest.mark.parametrize("path", sorted(DAGS_FOLDER.glob("*.py")), ids=lambda p: p.name)
def test_dag_files_import_nothing_heavy_at_module_level(path: Path) -> None:
    """Heavy and project imports belong inside tasks, so the scheduler parses DAGs fast."""
    tree = ast.parse(path.read_text())
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = set()
    for node in top_level:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif node.module:
            names.add(node.module.split(".")[0])
    assert not names & (HEAVY_MODULES | PROJECT_PACKAGES), names
