"""Start `prewarm router serve` as a child process on a free localhost port, and stop it.

The demo and `prewarm up` both need a router the DAGs can push their config to: this module
starts one with a freshly generated admin token (passed through the environment, never written
anywhere), waits for its ``/healthz``, and hands back what the ``prewarm_router`` Airflow
connection needs.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.settings import Settings, get_settings

ROUTER_CONNECTION_ENV = "AIRFLOW_CONN_PREWARM_ROUTER"


@dataclass(frozen=True)
class RouterProcess:
    """A running router: where it listens, its admin token, its process and its log."""

    host: str
    port: int
    token: str
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        """Base URL of the router's API."""
        return f"http://{self.host}:{self.port}"

    def connection_env(self) -> dict[str, str]:
        """``AIRFLOW_CONN_PREWARM_ROUTER``: host and port of this router, token as password."""
        connection = {
            "conn_type": "http", "host": self.host, "port": self.port, "password": self.token
        }  # fmt: skip
        return {ROUTER_CONNECTION_ENV: json.dumps(connection)}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_router(
    settings: Settings | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> RouterProcess:
    """Start the router on 127.0.0.1 (``port`` or a free one) and wait until it is healthy.

    ``env`` adds variables to the router's environment (settings overrides, say). Raises
    RuntimeError, with the end of its log, when it exits or stays unhealthy.
    """
    settings = settings or get_settings()
    host = "127.0.0.1"
    port = port or free_port(host)
    token = secrets.token_urlsafe(32)
    log = log or settings.home / "logs" / "router.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    child_env = {
        **os.environ,
        **(env or {}),
        "PREWARM_HOME": str(settings.home.resolve()),
        settings.router.token_env: token,
    }
    command = [sys.executable, "-m", "prewarm.cli", "router", "serve", "--host", host,
               "--port", str(port)]  # fmt: skip
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=child_env,
            start_new_session=True,
        )  # fmt: skip
    router = RouterProcess(host, port, token, process, log)
    try:
        wait_healthy(router.url + "/healthz", process, log)
    except BaseException:
        stop_process(process)
        raise
    return router


def wait_healthy(
    url: str, process: subprocess.Popen | None, log: Path | None, timeout_s: float = 60.0
) -> None:
    """Poll ``url`` until it answers 2xx; RuntimeError if ``process`` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({process.returncode}){_tail(log)}")
        try:
            if httpx.get(url, timeout=2.0).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url}: no healthy answer within {timeout_s:.0f} s{_tail(log)}")


def stop_process(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Interrupt ``process`` (and its group) like Ctrl-C; kill it if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, 2)  # SIGINT: uvicorn and Airflow shut down cleanly on it
    except ProcessLookupError:
        return
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


@contextmanager
def running_router(
    settings: Settings | None = None, env: dict[str, str] | None = None
) -> Iterator[RouterProcess]:
    """A router for the duration of the ``with`` block; stopped afterwards, whatever happens."""
    router = start_router(settings, env=env)
    try:
        yield router
    finally:
        stop_process(router.process)


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n" + "\n".join(text)
