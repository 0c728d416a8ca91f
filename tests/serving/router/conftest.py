"""Shared pieces of the router tests: configs, stores (SQLite and Redis) and a live server."""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from serving.router.models import Allocation, RoutingConfig, Thresholds
from serving.router.redis_store import RedisRouterStore
from serving.router.sqlite_store import SqliteRouterStore
from serving.router.store import RouterStore
from tests.conftest import REDIS_URL

with warnings.catch_warnings():
    # Starlette now asks for the httpx2 package, which this project does not pin; the
    # test client still works with httpx, so the import-time notice is silenced here.
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

__all__ = ["TestClient"]

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EAST, WEST, EUROPE = "aws-us-east-1", "aws-us-west-2", "aws-eu-west-1"


def allocation(user_id: str, region: str = EAST, current: str = WEST, **extra: Any) -> Allocation:
    """A pre-allocation of 2 cores / 4 GB at ``region`` for a user served from ``current``."""
    fields: dict[str, Any] = {
        "cpu_cores": 2.0, "ram_gb": 4.0, "storage_iops": 300.0, "network_mbps": 50.0,
        "expected_latency_ms": 80.0,
    }  # fmt: skip
    fields.update(extra)
    return Allocation(user_id=user_id, region=region, current_region=current, **fields)


def config(version: int, *users: Allocation, **thresholds: Any) -> RoutingConfig:
    """A routing config of ``users`` (default: one user u1), thresholds as given."""
    return RoutingConfig(
        version=version,
        thresholds=Thresholds(**thresholds),
        users=list(users) or [allocation("u1")],
    )


def config_json(version: int, *users: Allocation, **thresholds: Any) -> dict[str, Any]:
    """``config(...)`` as the JSON body of a push."""
    return config(version, *users, **thresholds).model_dump(mode="json")


@pytest.fixture
def settings(isolated_home: Path) -> Settings:
    """Settings on this test's own PREWARM_HOME."""
    return Settings(home=isolated_home)



@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[RouterStore]:
    """Each router store in turn: SQLite under the test's home, Redis under a unique prefix."""
    opened: RouterStore
    if request.param == "sqlite":
        opened = SqliteRouterStore(settings.serving_dir / "router.sqlite", rejections_kept=3)
    else:
        prefix = request.getfixturevalue("redis_prefix")
        opened = RedisRouterStore(REDIS_URL, prefix, rejections_kept=3)
    yield opened
    opened.close()


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def live_server(app: Any, port: int) -> Iterator[str]:
    """Serve ``app`` with uvicorn on loopback in a thread; yield its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
