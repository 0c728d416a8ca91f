"""`prewarm demo` end to end on a tiny world: simulate, land, and run the DAGs with Airflow."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from core.settings import get_settings
from prewarm.cli import app


@pytest.fixture
def tiny_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREWARM_DEMO__USERS", "6")
    monkeypatch.setenv("PREWARM_DEMO__DAYS", "2")
    get_settings.cache_clear()


def test_demo_runs_the_ingest_dag_and_serves_features_online(tiny_demo) -> None:
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "telemetry_ingest" in result.output and "success" in result.output
    assert "3,456 rows in, 3,456 valid" in result.output
    home = get_settings().home
    assert (home / "airflow" / "airflow.db").exists()
    assert list((home / "ingest" / "batches").glob("*.json"))
    # A second run finds nothing new to ingest and leaves the store as it was.
    again = CliRunner().invoke(app, ["demo"])
    assert again.exit_code == 0, again.output
    assert "1 batch(es), 3,456 rows in" in again.output
