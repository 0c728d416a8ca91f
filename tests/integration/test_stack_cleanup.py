"""A LocalStack leaves nothing behind when what runs inside it fails."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from prewarm.stack import LocalStack
from tests.integration.test_celery_stack import _require_postgres_and_redis


class BoomError(Exception):
    """Stands for any failure of the code using the stack."""


def test_a_failure_inside_the_stack_still_stops_its_processes_and_drops_its_data(
    tmp_path: Path,
) -> None:
    _require_postgres_and_redis()
    stack = LocalStack(tmp_path / "stack")
    pids: dict[str, int] = {}
    with pytest.raises(BoomError), stack:
        stack.create_resources()
        stack.start_services()
        pids.update(stack.pids)
        assert httpx.get(f"{stack.endpoints.mlflow}/health", timeout=30).status_code == 200
        assert httpx.get(f"{stack.endpoints.router}/healthz", timeout=30).status_code == 200
        assert stack.leftovers()["databases"] == len(stack.endpoints.databases)
        raise BoomError

    assert set(pids) == {"mlflow", "router"}
    assert not [name for name, pid in pids.items() if psutil.pid_exists(pid)]
    assert stack.leftovers() == {"databases": 0, "redis_keys": 0}
