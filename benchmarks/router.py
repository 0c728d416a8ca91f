"""Router load test: probe decisions per second and per-request latency, over loopback.

`prewarm router serve` (uvicorn, one worker, SQLite state) runs in a subprocess on a scratch
PREWARM_HOME; this process pushes a config of 10,000 users (a current and a pre-allocated
region each, drawn from the catalogue) and then sends probe batches over one keep-alive
connection, one request at a time: each request carries ``USERS_PER_REQUEST`` users with two
probes each (to the current and to the pre-allocated region), so it yields that many
decisions. Every user is probed ``ROUNDS`` times, so users pass ``min_samples`` and some
switch over (each switch writes its intent). Request bodies are encoded before the clock runs.

References measured in the same run: the round trip of ``GET /healthz`` on the same server
(the floor of the HTTP stack) and the same batches through ``RouterService.handle_probes`` in
this process, without HTTP (what the decisions and the state cost on their own). The server's
CPU time during the load is reported too: on a shared machine, decisions per server CPU-second
says what one free core would sustain, and the machine's load average at the start is kept.
The migration executor is switched off in the server: this measures the decision path.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

USERS = 10_000
USERS_PER_REQUEST = 50
ROUNDS = 3
SEED = 5
HEALTHZ_REPEATS = 500


def run(users: int = USERS, users_per_request: int = USERS_PER_REQUEST) -> dict[str, Any]:
    """Load-test a router subprocess; figures beside the same-run references."""
    from core.regions import load_regions

    rng = np.random.default_rng(SEED)
    regions = [region.code for region in load_regions()]
    plan = _plan(users, regions, rng)
    batches = _batches(plan, users_per_request, rng)
    token = secrets.token_urlsafe(24)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="prewarm-bench-router-") as tmp:
        with (
            _router(Path(tmp) / "served", token) as (url, pid),
            httpx.Client(base_url=url) as client,
        ):
            pushed = client.post(
                "/v1/config",
                json={"version": 1, "users": plan},
                headers={"Authorization": f"Bearer {token}"},
                timeout=120,
            )
            pushed.raise_for_status()
            healthz_ms = _timed(lambda: client.get("/healthz"), HEALTHZ_REPEATS)
            cpu_before = _cpu_seconds(pid)
            figures = _load(client, batches)
            server_cpu_s = _cpu_seconds(pid) - cpu_before
        in_process = _in_process(Path(tmp) / "in-process", plan, batches)
    return {
        "users": users,
        "decisions_per_s": figures["decisions_per_s"],
        "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"],
        "users_per_request": users_per_request,
        "probes_per_request": 2 * users_per_request,
        "requests": figures["requests"],
        "decisions": figures["decisions"],
        "switchovers": figures["switchovers"],
        "concurrency": 1,
        "workers": 1,
        "state": "sqlite",
        "server_cpu_s": round(server_cpu_s, 2),
        "decisions_per_server_cpu_s": round(figures["decisions"] / server_cpu_s),
        "load_average_1m": round(load_before, 2),
        "cpu_count": os.cpu_count(),
        "reference_healthz_p50_ms": round(statistics.median(healthz_ms), 3),
        "reference_in_process_decisions_per_s": in_process,
    }


def _plan(users: int, regions: list[str], rng: np.random.Generator) -> list[dict[str, Any]]:
    """One allocation per user: random current and pre-allocated regions, plausible figures."""
    current = rng.choice(regions, users)
    target = rng.choice(regions, users)
    return [
        {
            "user_id": f"u{i:06d}",
            "region": str(target[i]),
            "current_region": str(current[i]),
            "cpu_cores": 2.0,
            "ram_gb": 8.0,
            "storage_iops": 500.0,
            "network_mbps": 100.0,
            "expected_latency_ms": float(rng.uniform(10, 120)),
        }
        for i in range(users)
    ]


def _batches(
    plan: list[dict[str, Any]], users_per_request: int, rng: np.random.Generator
) -> list[bytes]:
    """Encoded probe batches: every user ROUNDS times, two probes each, in user order."""
    bodies = []
    for _ in range(ROUNDS):
        for start in range(0, len(plan), users_per_request):
            probes = []
            for user in plan[start : start + users_per_request]:
                for region, low, high in ((user["current_region"], 20, 110),
                                          (user["region"], 10, 120)):  # fmt: skip
                    probes.append({"user_id": user["user_id"], "region": region,
                                   "latency_ms": round(float(rng.uniform(low, high)), 2),
                                   "throughput_mbps": 50.0, "cpu_utilisation": 0.4})  # fmt: skip
            bodies.append(json.dumps({"probes": probes}).encode())
    return bodies


def _load(client: httpx.Client, batches: list[bytes]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    latencies_ms, decisions, switchovers = [], 0, 0
    started = time.perf_counter()
    for body in batches:
        sent = time.perf_counter()
        response = client.post("/v1/probes", content=body, headers=headers)
        latencies_ms.append((time.perf_counter() - sent) * 1000)
        response.raise_for_status()
        answer = response.json()["decisions"]
        decisions += len(answer)
        switchovers += sum(d["action"] == "switch" for d in answer)
    elapsed = time.perf_counter() - started
    return {
        "decisions_per_s": round(decisions / elapsed),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 3),
        "requests": len(batches),
        "decisions": decisions,
        "switchovers": switchovers,
    }


def _in_process(home: Path, plan: list[dict[str, Any]], batches: list[bytes]) -> int:
    """Decisions per second of the same batches through the service, without HTTP."""
    from datetime import UTC, datetime

    from core.settings import Settings
    from serving.router.models import ProbeBatch, RoutingConfig
    from serving.router.service import RouterService
    from serving.router.store import open_store

    settings = Settings(home=home)
    store = open_store(settings)
    service = RouterService(store, settings, lambda: datetime.now(UTC))
    service.push_config(RoutingConfig.model_validate({"version": 1, "users": plan}))
    decisions = 0
    started = time.perf_counter()
    for body in batches:
        decisions += len(
            service.handle_probes(ProbeBatch.model_validate_json(body).probes).decisions
        )
    rate = round(decisions / (time.perf_counter() - started))
    store.close()
    return rate


def _timed(call, repeats: int) -> list[float]:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call().raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


@contextmanager
def _router(home: Path, token: str) -> Iterator[tuple[str, int]]:
    """`prewarm router serve` in a subprocess on a free loopback port; yields URL and pid."""
    port = _free_port()
    # The decision path is measured alone: the benchmark's users have no sessions or warm
    # holds, so an in-process migration executor would only cold-start and roll back.
    env = {**os.environ, "PREWARM_HOME": str(home), "PREWARM_ROUTER_TOKEN": token,
           "PREWARM_ROUTER__RUN_MIGRATIONS": "false"}  # fmt: skip
    command = [sys.executable, "-m", "prewarm.cli", "router", "serve", "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, server)
        yield url, server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_until_up(url: str, server: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"router exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"router did not answer at {url} within {timeout_s:.0f} s")


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
