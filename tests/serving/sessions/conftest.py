"""Session stores to test: SQLite (the default), Redis and S3 (a moto server on loopback)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from core.settings import Settings, get_settings
from serving.sessions.redis_store import RedisSessionStore
from serving.sessions.s3_store import S3SessionStore
from serving.sessions.sql_store import SqlSessionStore
from serving.sessions.store import SessionStore
from tests.conftest import REDIS_URL
from tests.serving.provisioning.aws_moto import (  # noqa: F401 (fixture)
    FAKE_CREDENTIALS,
    moto_server,
    shared_session,
)

REGION = "aws-eu-west-1"

StoreFactory = Callable[[str], SessionStore]


@pytest.fixture
def settings() -> Settings:
    """This test's settings (its own PREWARM_HOME)."""
    return get_settings()



@pytest.fixture
def s3_buckets(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], str]:
    """Creates a uniquely named bucket on the moto server per region asked for; its name."""
    endpoint = request.getfixturevalue("moto_server")
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    run = uuid.uuid4().hex[:10]
    s3 = shared_session().client("s3", region_name="us-east-1", endpoint_url=endpoint)

    def bucket(region: str) -> str:
        name = f"sessions-{run}-{region}"
        s3.create_bucket(Bucket=name)
        return name

    return bucket


@pytest.fixture(params=["sqlite", "redis", "s3"])
def stores(request: pytest.FixtureRequest, settings: Settings) -> Iterator[StoreFactory]:
    """Each backend in turn, as a factory of one store per region (closed afterwards)."""
    opened: list[SessionStore] = []

    def make(region: str) -> SessionStore:
        store: SessionStore
        if request.param == "sqlite":
            path = settings.serving_dir / "sessions" / f"{region}.sqlite"
            store = SqlSessionStore.sqlite(path, region, lock_timeout_seconds=30.0)
        elif request.param == "redis":
            prefix = request.getfixturevalue("redis_prefix")
            store = RedisSessionStore(REDIS_URL, prefix, region)
        else:
            bucket = request.getfixturevalue("s3_buckets")(region)
            endpoint = request.getfixturevalue("moto_server")
            store = S3SessionStore(bucket, region, endpoint_url=endpoint, session=shared_session())
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(stores: StoreFactory) -> SessionStore:
    """One region's store on each backend."""
    return stores(REGION)
