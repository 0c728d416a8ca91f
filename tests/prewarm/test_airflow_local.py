"""Running a DAG with the local Airflow on SQLite: outcome, logs, and re-runs at the same moment."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.settings import get_settings
from prewarm.airflow_local import ensure_metadata_db, run_dag

DAG_FILE = '''
import pendulum
import os

from airflow.sdk import dag, task


@dag(dag_id="tiny", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def tiny():
    @task
    def when(**context) -> str:
        moment = context["dag_run"].run_after.isoformat()
        with open(os.environ["TINY_MOMENTS"], "a") as moments:
            print(moment, file=moments)
        return moment

    @task
    def fail_if_asked(params: dict | None = None, **context) -> None:
        if context["dag_run"].conf.get("fail"):
            raise RuntimeError("asked to fail")

    when() >> fail_if_asked()


tiny()
'''


@pytest.fixture
def tiny_dags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "tiny.py").write_text(DAG_FILE)
    monkeypatch.setenv("PREWARM_DAGS_FOLDER", str(folder))
    get_settings.cache_clear()
    ensure_metadata_db()
    return folder


def test_a_dag_runs_at_the_given_moment_and_can_run_there_again(tiny_dags: Path) -> None:
    moment = datetime(2026, 1, 14, tzinfo=UTC)
    moments = tiny_dags / "moments.txt"
    first = run_dag("tiny", run_after=moment, env={"TINY_MOMENTS": str(moments)})
    assert first.ok, first.log.read_text()[-2000:]
    assert first.task_states == {"when": "success", "fail_if_asked": "success"}
    # The same moment again (a second demo): the earlier run is replaced, not a clash of ids.
    again = run_dag("tiny", run_after=moment, env={"TINY_MOMENTS": str(moments)})
    assert again.ok, again.log.read_text()[-2000:]
    assert moments.read_text().split() == [moment.isoformat()] * 2


def test_a_failing_run_reports_its_failed_task(tiny_dags: Path) -> None:
    result = run_dag("tiny", conf={"fail": True}, env={"TINY_MOMENTS": str(tiny_dags / "m.txt")})
    assert not result.ok
    assert result.task_states["fail_if_asked"] == "failed"
    assert "asked to fail" in result.log.read_text()
