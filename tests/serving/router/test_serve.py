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
