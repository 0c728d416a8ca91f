"""Run prewarm's DAGs with a local Airflow on SQLite (the embedded default).

Each DAG run happens in a child process whose Airflow configuration comes from the
environment built here, so the caller's process never imports Airflow and its logs go to a
file under ``PREWARM_HOME/airflow/logs`` instead of the terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.settings import Settings, get_settings

RESULT_MARKER = "PREWARM_DAG_RESULT "


@dataclass(frozen=True)
class DagRunResult:
    """The outcome of one DAG run: its state, each task's state, and where the log is."""

    dag_id: str
    state: str
    task_states: dict[str, str]
    log: Path

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.state == "success"


def airflow_env(settings: Settings | None = None) -> dict[str, str]:
    """The environment for an Airflow on SQLite whose home lives in ``PREWARM_HOME``."""
    settings = settings or get_settings()
    home = settings.airflow_home.resolve()
    return {
        **os.environ,
        "PREWARM_HOME": str(settings.home.resolve()),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_folder.resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Registered unpaused, so a run triggered in the UI of `prewarm up` starts at once.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
    }


def ensure_metadata_db(settings: Settings | None = None) -> None:
    """Create or upgrade the SQLite metadata database (idempotent)."""
    settings = settings or get_settings()
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    log = _log_path("db-migrate", settings)
    with log.open("w") as handle:
        subprocess.run(
            [_airflow_executable(), "db", "migrate"],
            check=True,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=airflow_env(settings),
        )


def run_dag(
    dag_id: str,
    conf: dict | None = None,
    settings: Settings | None = None,
    run_after: datetime | None = None,
    env: dict[str, str] | None = None,
) -> DagRunResult:
    """Run ``dag_id`` once with ``dag.test()`` in a child process and report its outcome.

    ``run_after`` is the run's "now" as its tasks see it (default: the wall clock), so a demo
    can run the DAGs at the end of a simulated history; ``env`` adds variables to the child's
    environment (an ``AIRFLOW_CONN_*`` connection, say).
    """
    settings = settings or get_settings()
    log = _log_path(dag_id, settings)
    stamp = run_after.isoformat() if run_after is not None else ""
    command = [
        sys.executable, "-m", "prewarm.airflow_local", dag_id, json.dumps(conf or {}), stamp
    ]  # fmt: skip
    child_env = {**airflow_env(settings), **(env or {})}
    with log.open("w") as handle:
        completed = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=handle, env=child_env, text=True
        )
        handle.write(completed.stdout)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            found = json.loads(line[len(RESULT_MARKER) :])
            return DagRunResult(dag_id, found["state"], found["task_states"], log)
    return DagRunResult(dag_id, f"crashed (exit {completed.returncode})", {}, log)


def _log_path(name: str, settings: Settings) -> Path:
    folder = settings.airflow_home / "logs" / "prewarm"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.log"


def _airflow_executable() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _child(dag_id: str, conf: dict, run_after: datetime | None) -> None:
    """In the child: parse the DAGs folder, run the DAG, print the result line."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    if run_after is not None:
        _forget_run(dag_id, run_after)
    run = bag.get_dag(dag_id).test(run_conf=conf or None, run_after=run_after)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print(RESULT_MARKER + json.dumps({"state": str(run.state), "task_states": states}))


def _forget_run(dag_id: str, run_after: datetime) -> None:
    """Delete an earlier test run at ``run_after``: a re-run replaces it (its id is the same)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType
    from sqlalchemy import delete

    run_id = DagRun.generate_run_id(
        run_type=DagRunType.MANUAL, logical_date=run_after, run_after=run_after
    )
    with create_session() as session:
        session.execute(delete(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))


if __name__ == "__main__":
    _child(
        sys.argv[1],
        json.loads(sys.argv[2]),
        datetime.fromisoformat(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None,
    )
