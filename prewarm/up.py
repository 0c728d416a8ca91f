"""`prewarm up`: Airflow, the MLflow UI and the router on localhost, on the demo's home.

Airflow runs as its four components (api-server, scheduler, dag-processor, triggerer) with the
LocalExecutor on the same ``AIRFLOW_HOME`` and SQLite database that `prewarm demo` uses, so
the demo's runs are there; the MLflow UI serves the demo's ``sqlite:///`` store and artifacts;
the router gets a generated admin token, which Airflow's ``prewarm_router`` connection carries.
The browser tests start the same stack through ``running_stack``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from core.settings import Settings, get_settings
from prewarm.airflow_local import airflow_env, ensure_metadata_db
from prewarm.router_process import (
    RouterProcess,
    free_port,
    start_router,
    stop_process,
    wait_healthy,
)

AIRFLOW_USER = "admin"
AIRFLOW_COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")


@dataclass
class Stack:
    """The running services, their URLs, the Airflow login and where their logs are."""

    airflow_url: str
    mlflow_url: str
    router: RouterProcess
    airflow_user: str
    airflow_password: str
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def failed(self) -> list[str]:
        """Names of the services whose process has exited."""
        found = [name for name, p in self.processes.items() if p.poll() is not None]
        return found + (["router"] if self.router.process.poll() is not None else [])


def airflow_password(settings: Settings) -> str:
    """The Airflow UI password of ``admin``: kept in the home, generated on first use."""
    path = _passwords_file(settings)
    if path.exists():
        return json.loads(path.read_text())[AIRFLOW_USER]
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({AIRFLOW_USER: password}))
    path.chmod(0o600)
    return password


def stack_airflow_env(
    settings: Settings, api_url: str, router: RouterProcess, schedules: bool = False
) -> dict[str, str]:
    """Airflow's configuration for the stack: the demo's SQLite, LocalExecutor, simple auth.

    Without ``schedules`` the scheduler creates no cron runs of its own: the demo's world is a
    finished history, on which hourly runs would only find stale data; runs triggered from
    the UI or the API (and by Assets) still run.
    """
    return {
        **airflow_env(settings),
        **router.connection_env(),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(_passwords_file(settings)),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(settings.airflow_home.resolve() / "logs"),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(schedules),
    }


def start_stack(
    settings: Settings | None = None,
    airflow_port: int | None = None,
    mlflow_port: int | None = None,
    router_port: int | None = None,
    schedules: bool = False,
    timeout_s: float = 180.0,
) -> Stack:
    """Start the router, the MLflow UI and Airflow; return once all answer their health checks.

    A port left out is picked free. Raises RuntimeError (with the end of the failing service's
    log) when one does not come up; whatever was started is stopped again.
    """
    settings = settings or get_settings()
    logs = settings.home / "logs" / "up"
    logs.mkdir(parents=True, exist_ok=True)
    ensure_metadata_db(settings)
    router = start_router(settings, port=router_port, log=logs / "router.log")
    airflow_url = f"http://127.0.0.1:{airflow_port or free_port()}"
    mlflow_port = mlflow_port or free_port()
    stack = Stack(
        airflow_url=airflow_url,
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
        router=router,
        airflow_user=AIRFLOW_USER,
        airflow_password=airflow_password(settings),
        logs=logs,
    )
    try:
        store = settings.home / "mlflow"
        store.mkdir(parents=True, exist_ok=True)
        stack.processes["mlflow"] = _spawn(
            [_tool("mlflow"), "ui", "--backend-store-uri", settings.mlflow_tracking_uri,
             "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
            # No job-execution workers (a pool of huey processes): the UI needs none.
            logs / "mlflow.log", {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )  # fmt: skip
        env = stack_airflow_env(settings, airflow_url, router, schedules)
        port = airflow_url.rsplit(":", 1)[1]
        for component in AIRFLOW_COMPONENTS:
            extra = ["--host", "127.0.0.1", "--port", port, "-w", "1"]
            command = [_tool("airflow"), component, *(extra if component == "api-server" else [])]
            stack.processes[component] = _spawn(command, logs / f"{component}.log", env)
        wait_healthy(f"{stack.mlflow_url}/health", stack.processes["mlflow"],
                     logs / "mlflow.log", timeout_s)  # fmt: skip
        wait_healthy(f"{airflow_url}/api/v2/monitor/health", stack.processes["api-server"],
                     logs / "api-server.log", timeout_s)  # fmt: skip
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    """Stop every service of ``stack`` (Airflow first, the router last)."""
    for name in reversed(list(stack.processes)):
        stop_process(stack.processes[name])
    stop_process(stack.router.process)


@contextmanager
def running_stack(settings: Settings | None = None, **options: object) -> Iterator[Stack]:
    """The stack for the duration of the ``with`` block; stopped afterwards, whatever happens.

    ``options`` are those of :func:`start_stack`.
    """
    stack = start_stack(settings, **options)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stop_stack(stack)


def run_until_interrupted(
    settings: Settings,
    airflow_port: int,
    mlflow_port: int,
    router_port: int,
    console: Console,
    schedules: bool = False,
) -> None:
    """Start the stack, print where everything is, and keep it up until Ctrl-C (or SIGTERM)."""
    _stop_on_signals()
    console.print("starting the router, the MLflow UI and Airflow (a minute or two)…")
    with running_stack(
        settings, airflow_port=airflow_port, mlflow_port=mlflow_port, router_port=router_port,
        schedules=schedules,
    ) as stack:  # fmt: skip
        console.print(f"[bold]Airflow[/]  {stack.airflow_url}  (login {stack.airflow_user} / "
                      f"{stack.airflow_password})")  # fmt: skip
        console.print(f"[bold]MLflow[/]   {stack.mlflow_url}")
        console.print(f"[bold]router[/]   {stack.router.url}  (admin token in the Airflow "
                      "connection prewarm_router)")  # fmt: skip
        console.print(f"logs under {stack.logs.resolve()}; Ctrl-C stops everything")
        try:
            while not stack.failed():
                time.sleep(1.0)
            raise RuntimeError(f"{', '.join(stack.failed())} stopped; see {stack.logs}")
        except KeyboardInterrupt:
            console.print("stopping…")


def _stop_on_signals() -> None:
    """Make SIGINT and SIGTERM end the wait, so the services are stopped whoever signals us."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def _spawn(command: list[str], log: Path, env: dict[str, str] | None) -> subprocess.Popen:
    with log.open("ab") as handle:
        return subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _passwords_file(settings: Settings) -> Path:
    return settings.airflow_home / "simple_auth_manager_passwords.json"


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))
