"""prewarm's production configuration, started for real as local processes (no Docker).

The same parts as ``docker-compose.yml``, on the PostgreSQL and Redis this machine runs:
Airflow 3 on PostgreSQL with the CeleryExecutor (broker in Redis, results in PostgreSQL): the
api-server, the scheduler, the dag-processor and N Celery workers; ``mlflow server`` on
PostgreSQL with proxied artifacts and allowed hosts set; the router (``prewarm router serve``)
with its state in Redis; Feast's online store in Redis and its registry in PostgreSQL; the
reservation ledger in PostgreSQL.

Everything a :class:`LocalStack` creates is its own and goes away on :meth:`LocalStack.close`:
four uniquely named databases (dropped), one Redis key prefix for the Celery broker and the
router plus one Feast project name (every key under them deleted), and the processes it started
(each with all its descendants). The integration test (``tests/integration``) and the scale-out
benchmark (``benchmarks/celery_scaleout.py``) both drive a DAG through it with the REST API.

Two Celery workers on one machine share one host name, so Airflow's task instances would not
say which worker ran them; each worker here gets its own ``hostname`` for its task instances
(:func:`worker_hostname`, wired in as Airflow's ``[core] hostname_callable``), as separate
hosts would.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx

from core.settings import CHECKOUT_DAGS_FOLDER

# Read by :func:`worker_hostname` in a worker's task processes (set per worker by LocalStack).
WORKER_HOSTNAME_ENV = "PREWARM_STACK_WORKER_HOSTNAME"
PARTS = ("airflow", "mlflow", "ledger", "feast")
TERMINAL_RUN_STATES = {"success", "failed"}


def worker_hostname() -> str:
    """The host name a task instance records: the worker's own name under a LocalStack.

    Airflow calls this (``[core] hostname_callable``) in the task's process, which inherits
    its Celery worker's environment; outside a LocalStack worker it is the machine's FQDN.
    """
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class StackEndpoints:
    """Where the stack's services listen and what it owns in PostgreSQL and Redis."""

    api: str
    mlflow: str
    router: str
    databases: dict[str, str]  # part ("airflow", "mlflow", "ledger", "feast") -> SQLAlchemy URL
    redis_prefix: str
    feast_project: str


class StackError(RuntimeError):
    """A part of the stack did not come up, or a DAG run did not finish in time."""


class LocalStack:
    """Start, drive and tear down the production configuration as processes.

    Use it as a context manager: everything it started or created is removed on exit, also
    after a failure. ``prewarm_env`` (PREWARM_* variables) is what the caller needs to reach
    the same MLflow, Feast, ledger and router from its own process, e.g. to build a world.
    """

    def __init__(
        self,
        root: Path,
        *,
        pg_host: str = "127.0.0.1",
        pg_port: int = 5432,
        pg_user: str = "postgres",
        redis_host: str = "127.0.0.1",
        redis_port: int = 6379,
        redis_db: int = 0,
        dags_folder: Path = CHECKOUT_DAGS_FOLDER,
        extra_prewarm_env: dict[str, str] | None = None,
        router_token: str | None = None,
    ) -> None:
        self.root = root.resolve()
        self.logs = self.root / "logs"
        self.home = self.root / "home"
        self.airflow_home = self.root / "airflow"
        token = secrets.token_hex(6)
        self._pg = {"host": pg_host, "port": pg_port, "user": pg_user}
        self._redis = {"host": redis_host, "port": redis_port, "db": redis_db}
        self._dags_folder = dags_folder.resolve()
        self._extra = dict(extra_prewarm_env or {})
        self.router_token = router_token or secrets.token_urlsafe(24)
        self._admin_password = secrets.token_urlsafe(16)
        self._jwt_secret = secrets.token_hex(32)
        self._api_secret = secrets.token_hex(32)
        self._db_names = {part: f"prewarm_stack_{token}_{part}" for part in PARTS}
        pg = f"{pg_user}@{pg_host}:{pg_port}"
        self.endpoints = StackEndpoints(
            api=f"http://127.0.0.1:{free_port()}",
            mlflow=f"http://127.0.0.1:{free_port()}",
            router=f"http://127.0.0.1:{free_port()}",
            databases={
                part: f"postgresql+psycopg2://{pg}/{name}" for part, name in self._db_names.items()
            },
            redis_prefix=f"prewarm-stack:{token}:",
            feast_project=f"prewarm_stack_{token}",
        )
        self._processes: dict[str, subprocess.Popen] = {}
        self._log_files: dict[str, IO[bytes]] = {}
        self._log_offsets: dict[str, int] = {}  # a restarted process appends to its log
        self._created_databases: list[str] = []
        self._token: str | None = None
        self.workers: dict[int, str] = {}  # running worker index -> its task instances' hostname

    @property
    def pids(self) -> dict[str, int]:
        """The process id of each part started here and still tracked, by name."""
        return {name: process.pid for name, process in self._processes.items()}

    # ------------------------------------------------------------------ environments

    @property
    def redis_url(self) -> str:
        """The Redis database the broker, the router and Feast share (under own prefixes)."""
        return f"redis://{self._redis['host']}:{self._redis['port']}/{self._redis['db']}"

    def prewarm_env(self) -> dict[str, str]:
        """PREWARM_* settings (core.settings) that point prewarm's code at this stack."""
        router_port = self.endpoints.router.rsplit(":", 1)[1]
        return {
            "PREWARM_HOME": str(self.home),
            "PREWARM_DAGS_FOLDER": str(self._dags_folder),
            "PREWARM_MLFLOW__TRACKING_URI": self.endpoints.mlflow,
            "PREWARM_FEAST__ONLINE_STORE": "redis",
            "PREWARM_FEAST__PROJECT": self.endpoints.feast_project,
            "PREWARM_FEAST__REDIS_CONNECTION_STRING": (
                f"{self._redis['host']}:{self._redis['port']},db={self._redis['db']}"
            ),
            "PREWARM_FEAST__REGISTRY_URL": self.endpoints.databases["feast"],
            "PREWARM_PROVISIONING__LEDGER_URL": self.endpoints.databases["ledger"],
            "PREWARM_ROUTER__URL": self.endpoints.router,
            "PREWARM_ROUTER__HOST": "127.0.0.1",
            "PREWARM_ROUTER__PORT": router_port,
            "PREWARM_ROUTER__STATE": "redis",
            "PREWARM_ROUTER__REDIS_URL": self.redis_url,
            "PREWARM_ROUTER__REDIS_PREFIX": f"{self.endpoints.redis_prefix}router:",
            **self._extra,
        }

    def airflow_env(self) -> dict[str, str]:
        """Airflow's configuration (environment only): PostgreSQL, Celery on Redis, auth."""
        api = self.endpoints.api
        airflow_db = self.endpoints.databases["airflow"]
        router_port = int(self.endpoints.router.rsplit(":", 1)[1])
        connection = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": router_port,
            "password": self.router_token,
        }
        return {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self._dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Only runs asked for through the API: no cron or asset runs of their own.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self._passwords_file),
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self._api_secret,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CELERY__BROKER_URL": self.redis_url,
            # SQLAlchemy 2.1 reads bare postgresql:// as psycopg 3 (not installed): keep +psycopg2
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_db,
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": (
                f"{self.endpoints.redis_prefix}celery:"
            ),
            "AIRFLOW_CONN_PREWARM_ROUTER": json.dumps(connection),
        }

    @property
    def _passwords_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json"

    def _env(self, **more: str) -> dict[str, str]:
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PREWARM_"))
        }
        return {**base, **self.prewarm_env(), **self.airflow_env(), **more}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_resources(self) -> None:
        """Create the databases and the folders (names are unique to this stack)."""
        import psycopg2

        for folder in (self.logs, self.home, self.airflow_home):
            folder.mkdir(parents=True, exist_ok=True)
        self._passwords_file.write_text(json.dumps({"admin": self._admin_password}))
        with contextlib.closing(psycopg2.connect(dbname="postgres", **self._pg)) as admin:
            admin.autocommit = True
            with admin.cursor() as cursor:
                for name in self._db_names.values():
                    cursor.execute(f'CREATE DATABASE "{name}"')
                    self._created_databases.append(name)

    def start_services(self, timeout: float = 120.0) -> None:
        """Start ``mlflow server`` (PostgreSQL backend) and the router (Redis state)."""
        mlflow_port = self.endpoints.mlflow.rsplit(":", 1)[1]
        self._spawn(
            "mlflow",
            [
                _tool("mlflow"), "server",
                "--backend-store-uri", self.endpoints.databases["mlflow"],
                "--host", "127.0.0.1", "--port", mlflow_port, "--workers", "1",
                "--serve-artifacts", "--artifacts-destination", (self.root / "artifacts").as_uri(),
                "--allowed-hosts", f"127.0.0.1:{mlflow_port},localhost:{mlflow_port}",
            ],
        )
        self._spawn(
            "router",
            [_tool("prewarm"), "router", "serve"],
            PREWARM_ROUTER_TOKEN=self.router_token,
            PREWARM_ROUTER__PRODUCTION="true",
        )
        self._wait_http("mlflow", f"{self.endpoints.mlflow}/health", timeout)
        self._wait_http("router", f"{self.endpoints.router}/healthz", timeout)

    def start_airflow(self, workers: int = 2, concurrency: int = 1, timeout: float = 240.0) -> None:
        """Migrate the metadata database, then start the Airflow components and the workers."""
        migrate = self._log("airflow-db-migrate")
        subprocess.run(
            [_tool("airflow"), "db", "migrate"],
            env=self._env(),
            stdout=migrate,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=timeout,
        )
        port = self.endpoints.api.rsplit(":", 1)[1]
        self._spawn(
            "api-server",
            [_tool("airflow"), "api-server", "--host", "127.0.0.1", "--port", port, "-w", "1"],
        )
        self._spawn("scheduler", [_tool("airflow"), "scheduler"])
        self._spawn("dag-processor", [_tool("airflow"), "dag-processor"])
        for index in range(1, workers + 1):
            self.start_worker(index, concurrency, wait=False)
        self._wait_http("api-server", f"{self.endpoints.api}/api/v2/monitor/health", timeout)
        for index in range(1, workers + 1):
            self.wait_worker(index, timeout)

    def start_worker(self, index: int, concurrency: int = 1, *, wait: bool = True) -> str:
        """Start Celery worker ``w<index>``; returns the host name its task instances record."""
        hostname = f"w{index}@{socket.gethostname()}"
        self._spawn(
            f"worker-{index}",
            [
                _tool("airflow"), "celery", "worker",
                "--celery-hostname", f"w{index}@%h",
                "--concurrency", str(concurrency),
                "--skip-serve-logs",  # one log server port per host; the api-server reads files
            ],
            **{WORKER_HOSTNAME_ENV: hostname},
        )
        self.workers[index] = hostname
        if wait:
            self.wait_worker(index)
        return hostname

    def wait_worker(self, index: int, timeout: float = 240.0) -> None:
        """Wait until worker ``w<index>`` has connected to the broker and is consuming."""
        name = f"worker-{index}"
        log, start = self.logs / f"{name}.log", self._log_offsets.get(name, 0)
        self._wait(name, lambda: b" ready." in log.read_bytes()[start:], timeout)

    def stop_worker(self, index: int) -> None:
        """Stop worker ``w<index>`` (warm shutdown, then kill) and forget it."""
        self._stop(f"worker-{index}")
        self.workers.pop(index, None)

    def close(self) -> None:
        """Stop every process started here, drop the databases, delete the Redis keys."""
        for name in reversed(list(self._processes)):
            self._stop(name)
        errors: list[str] = []
        try:
            self._drop_databases()
        except Exception as error:  # keep cleaning up; report at the end
            errors.append(f"databases: {error}")
        try:
            self._delete_redis_keys()
        except Exception as error:
            errors.append(f"redis: {error}")
        for handle in self._log_files.values():
            handle.close()
        self._log_files.clear()
        if errors:
            raise StackError("clean-up incomplete: " + "; ".join(errors))

    def redis_key_counts(self) -> dict[str, int]:
        """How many Redis keys this stack holds now: Celery broker, router state, Feast."""
        import redis

        prefix = self.endpoints.redis_prefix
        patterns = {
            "celery": f"{prefix}celery:*",
            "router": f"{prefix}router:*",
            "feast": f"*{self.endpoints.feast_project}",
        }
        client = redis.Redis(**self._redis)
        try:
            return {
                part: sum(1 for _ in client.scan_iter(pattern, count=1000))
                for part, pattern in patterns.items()
            }
        finally:
            client.close()

    def leftovers(self) -> dict[str, int]:
        """How many of this stack's databases and Redis keys still exist (0 and 0 after close)."""
        import psycopg2
        import redis

        with (
            contextlib.closing(psycopg2.connect(dbname="postgres", **self._pg)) as admin,
            admin.cursor() as cursor,
        ):
            cursor.execute(
                "SELECT count(*) FROM pg_database WHERE datname = ANY(%s)",
                (list(self._db_names.values()),),
            )
            databases = cursor.fetchone()[0]
        client = redis.Redis(**self._redis)
        try:
            keys = sum(1 for pattern in self._redis_patterns() for _ in client.scan_iter(pattern))
        finally:
            client.close()
        return {"databases": databases, "redis_keys": keys}

    # ------------------------------------------------------------------ the REST API

    def api(self) -> httpx.Client:
        """An HTTP client for Airflow's REST API (v2) with a bearer token from /auth/token."""
        if self._token is None:
            answer = httpx.post(
                f"{self.endpoints.api}/auth/token",
                json={"username": "admin", "password": self._admin_password},
                timeout=30,
            )
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return httpx.Client(
            base_url=f"{self.endpoints.api}/api/v2",
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=60,
        )

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> None:
        """Wait until the dag-processor has parsed ``dag_id`` and the API serves it."""
        with self.api() as client:
            def parsed() -> bool:
                return client.get(f"/dags/{dag_id}").status_code == 200

            self._wait(f"DAG {dag_id}", parsed, timeout)

    def trigger(self, dag_id: str, run_id: str, run_after: datetime, conf: dict) -> dict:
        """POST a manual run of ``dag_id`` whose ``run_after`` (the cycle's time) is given."""
        body = {
            "dag_run_id": run_id,
            "logical_date": None,
            "run_after": run_after.isoformat(),
            "conf": conf,
        }
        with self.api() as client:
            answer = client.post(f"/dags/{dag_id}/dagRuns", json=body)
        if answer.status_code >= 400:
            raise StackError(f"trigger {dag_id} refused: {answer.status_code} {answer.text}")
        return answer.json()

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600.0) -> dict:
        """Poll the run until it succeeds or fails; returns the run as the API reports it."""
        deadline = time.monotonic() + timeout
        with self.api() as client:
            while True:
                run = client.get(f"/dags/{dag_id}/dagRuns/{run_id}").raise_for_status().json()
                if run["state"] in TERMINAL_RUN_STATES:
                    return run
                self._check_alive()
                if time.monotonic() > deadline:
                    raise StackError(f"{dag_id}/{run_id} still {run['state']} after {timeout}s")
                time.sleep(2)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run (mapped ones one by one), from the REST API."""
        with self.api() as client:
            answer = client.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
            )
        return answer.raise_for_status().json()["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """The value a task instance returned (its ``return_value`` XCom), from the REST API."""
        with self.api() as client:
            answer = client.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
                "/xcomEntries/return_value",
                params={"map_index": map_index},
            )
        value = answer.raise_for_status().json()["value"]
        return json.loads(value) if isinstance(value, str) else value

    def log_tail(self, name: str, chars: int = 4000) -> str:
        """The end of a process's log (for failure messages)."""
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # ------------------------------------------------------------------ internals

    def _log(self, name: str) -> IO[bytes]:
        path = self.logs / f"{name}.log"
        self._log_offsets[name] = path.stat().st_size if path.exists() else 0
        handle = path.open("ab")
        self._log_files[name] = handle
        return handle

    def _spawn(self, name: str, argv: list[str], **more: str) -> None:
        self._processes[name] = subprocess.Popen(
            argv,
            env=self._env(**more),
            cwd=self.root,
            stdout=self._log(name),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _stop(self, name: str, grace: float = 20.0) -> None:
        import psutil

        process = self._processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        try:
            parent = psutil.Process(process.pid)
            family = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=grace)
        for member in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        handle = self._log_files.pop(name, None)
        if handle is not None:
            handle.close()

    def _check_alive(self) -> None:
        for name, process in self._processes.items():
            if process.poll() is not None:
                raise StackError(
                    f"{name} exited with {process.returncode}:\n{self.log_tail(name)}"
                )

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError, OSError):
                if ready():
                    return
            self._check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"{what} not ready after {timeout}s")
            time.sleep(1)

    def _wait_http(self, name: str, url: str, timeout: float) -> None:
        self._wait(name, lambda: httpx.get(url, timeout=5).status_code == 200, timeout)

    def _drop_databases(self) -> None:
        import psycopg2

        if not self._created_databases:
            return
        with contextlib.closing(psycopg2.connect(dbname="postgres", **self._pg)) as admin:
            admin.autocommit = True
            with admin.cursor() as cursor:
                for name in self._created_databases:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created_databases.clear()

    def _redis_patterns(self) -> list[str]:
        # Feast suffixes its keys with the project; the broker and the router use the prefix.
        return [f"{self.endpoints.redis_prefix}*", f"*{self.endpoints.feast_project}"]

    def _delete_redis_keys(self) -> None:
        import redis

        client = redis.Redis(**self._redis)
        try:
            for pattern in self._redis_patterns():
                batch = list(client.scan_iter(pattern, count=1000))
                for first in range(0, len(batch), 1000):
                    client.delete(*batch[first : first + 1000])
        finally:
            client.close()


def _tool(name: str) -> str:
    """A console script of this environment (airflow, mlflow, prewarm)."""
    return str(Path(sys.executable).with_name(name))
