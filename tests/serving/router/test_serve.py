"""`prewarm router serve`: starts the router on the given port, or refuses to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from prewarm.cli import app
from tests.serving.router.conftest import TOKEN, config_json, free_port


def test_production_without_a_token_refuses_to_start(monkeypatch) -> None:
    monkeypatch.setenv("PREWARM_ROUTER__PRODUCTION", "true")
    result = CliRunner().invoke(app, ["router", "serve", "--port", str(free_port())])
    assert result.exit_code == 2
    assert "PREWARM_ROUTER_TOKEN" in result.output


def test_serve_answers_on_the_given_port(isolated_home: Path) -> None:
    port = free_port()
    env = {**os.environ, "PREWARM_ROUTER_TOKEN": TOKEN}
    command = [sys.executable, "-m", "prewarm.cli", "router", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "router did not come up"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        pushed = httpx.post(f"{url}/v1/config", json=config_json(1),
                            headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        assert pushed.status_code == 200
        assert httpx.get(f"{url}/openapi.json").json()["info"]["title"] == "prewarm router"
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert (isolated_home / "serving" / "router.sqlite").exists()


def test_migrate_runs_the_executor_as_a_process_that_holds_the_lease_until_stopped(
    isolated_home: Path,
) -> None:
    from core.settings import get_settings
    from serving.router.store import open_store

    command = [sys.executable, "-m", "prewarm.cli", "router", "migrate"]
    executor = subprocess.Popen(command, stderr=subprocess.PIPE)
    store = open_store(get_settings())
    try:
        deadline = time.monotonic() + 60
        while store.hold_executor_lease("probe", 30):  # free until the process has taken it
            store.release_executor_lease("probe")
            assert executor.poll() is None, executor.stderr.read().decode()
            assert time.monotonic() < deadline, "the executor never took the lease"
            time.sleep(0.1)
        executor.terminate()
        assert executor.wait(timeout=30) == 0
        assert store.hold_executor_lease("probe", 30)  # given back at once, not left to lapse
    finally:
        if executor.poll() is None:
            executor.kill()
        store.close()
