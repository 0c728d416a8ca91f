"""Test-wide isolation: every test gets its own PREWARM_HOME and fresh settings."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
REDIS_URL = "redis://127.0.0.1:6379/0"
PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point PREWARM_HOME at a per-test folder and drop any PREWARM_* set outside the test."""
    for name in list(os.environ):
        if name.startswith("PREWARM_"):
            monkeypatch.delenv(name)
    home = tmp_path / "prewarm-home"
    monkeypatch.setenv("PREWARM_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def shared_datasets() -> Path:
    """The shared real traces, or a clean skip where this checkout has none."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not present at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A uniquely named, empty PostgreSQL database on 127.0.0.1:5432, dropped afterwards."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(connect_timeout=2, **PG_ADMIN)
    except psycopg2.OperationalError as error:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432: {error}")
    admin.autocommit = True
    name = f"prewarm_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def redis_keys_removed(pattern: str) -> Iterator[None]:
    """Skip the test without a local Redis; afterwards delete every key matching ``pattern``."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    try:
        yield
    finally:
        leftover = list(client.scan_iter(match=pattern))
        if leftover:
            client.delete(*leftover)
        client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix in the local Redis; every key under it is deleted afterwards."""
    prefix = f"prewarm-test:{uuid.uuid4().hex[:12]}:"
    with redis_keys_removed(f"{prefix}*"):
        yield prefix
