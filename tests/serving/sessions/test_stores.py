"""Every session store backend keeps the same rules: versions, frozen sessions, safe copies."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import pytest

from core.settings import Settings
from serving.sessions.state import (
    SessionConflictError,
    SessionFrozenError,
    SessionNotFoundError,
    SessionState,
    SessionVersionError,
)
from serving.sessions.store import SessionStore, open_session_stores
from tests.serving.sessions.conftest import StoreFactory

BLOB = b"\x00line one\nline two\n\xff" * 100


def test_put_creates_then_versions_each_write(store: SessionStore) -> None:
    first = store.put("u1", b"hello")
    second = store.put("u1", BLOB)

    assert (first.version, second.version) == (1, 2)
    stored = store.get("u1")
    assert stored == SessionState("u1", BLOB, 2, False, hashlib.sha256(BLOB).hexdigest())
    assert store.checksum("u1") == hashlib.sha256(BLOB).hexdigest()
    assert store.get("nobody") is None
    assert store.checksum("nobody") is None


def test_expected_version_refuses_a_lost_update(store: SessionStore) -> None:
    store.put("u1", b"a", expected_version=0)
    with pytest.raises(SessionVersionError):
        store.put("u1", b"b", expected_version=0)
    store.put("u1", b"b", expected_version=1)
    with pytest.raises(SessionVersionError):
        store.put("u1", b"c", expected_version=1)
    assert store.get("u1").data == b"b"


def test_a_frozen_session_cannot_be_written_until_unfrozen(store: SessionStore) -> None:
    store.put("u1", b"before")
    frozen = store.freeze("u1")
    assert store.freeze("u1") == frozen  # idempotent

    with pytest.raises(SessionFrozenError):
        store.put("u1", b"during")
    assert store.get("u1") == SessionState.of("u1", b"before", 1, frozen=True)

    assert store.unfreeze("u1") == SessionState.of("u1", b"before", 1, frozen=False)
    assert store.put("u1", b"after").version == 2


def test_freezing_or_unfreezing_nothing(store: SessionStore) -> None:
    with pytest.raises(SessionNotFoundError):
        store.freeze("ghost")
    assert store.unfreeze("ghost") is None
    assert store.list() == []


def test_restore_writes_a_frozen_copy_but_never_over_a_writable_session(
    stores: StoreFactory,
) -> None:
    source, target = stores("aws-us-east-1"), stores("aws-eu-west-1")
    source.put("u1", b"v1")
    state = source.freeze("u1")

    copy = target.restore(state)
    assert copy == SessionState.of("u1", b"v1", 1, frozen=True)
    assert target.restore(state) == copy  # a repeated copy changes nothing
    with pytest.raises(SessionFrozenError):
        target.put("u1", b"written at the target before the redirect")

    target.unfreeze("u1")
    target.put("u1", b"v2 at the target")
    with pytest.raises(SessionConflictError):
        target.restore(state)
    assert target.get("u1").data == b"v2 at the target"


def test_delete_can_be_limited_to_a_frozen_copy_and_a_checksum(store: SessionStore) -> None:
    live = store.put("u1", b"live")
    assert not store.delete("u1", frozen_only=True)  # writable: kept
    frozen = store.freeze("u1")
    assert live.checksum == frozen.checksum
    assert not store.delete("u1", frozen_only=True, checksum="0" * 64)  # another copy: kept
    assert store.get("u1") == frozen

    assert store.delete("u1", frozen_only=True, checksum=frozen.checksum)
    assert store.get("u1") is None
    assert not store.delete("u1", frozen_only=True)
    store.put("u2", b"x")
    assert not store.delete("u2", checksum="0" * 64)
    assert store.delete("u2")
    assert not store.delete("u2")


def test_list_names_every_user_with_a_session(store: SessionStore) -> None:
    for user in ("c", "a", "b:1@x"):
        store.put(user, user.encode())
    store.delete("a")
    assert store.list() == ["b:1@x", "c"]


def test_regions_are_separate(stores: StoreFactory) -> None:
    east, west = stores("aws-us-east-1"), stores("aws-us-west-2")
    east.put("u1", b"east")
    assert west.get("u1") is None
    assert west.list() == []


def test_concurrent_writers_lose_no_update(store: SessionStore) -> None:
    store.put("counter", b"0")
    writers, increments = 4, 15

    def increment() -> None:
        done = 0
        while done < increments:
            current = store.get("counter")
            try:
                store.put("counter", b"%d" % (int(current.data) + 1), current.version)
            except SessionVersionError:
                continue
            done += 1

    threads = [threading.Thread(target=increment) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    final = store.get("counter")
    assert int(final.data) == writers * increments
    assert final.version == 1 + writers * increments


def test_a_freeze_racing_writers_wins_cleanly(store: SessionStore) -> None:
    """Once freeze returns, the frozen state is the last one: no write lands after it."""
    store.put("u1", b"0")
    stop = threading.Event()
    accepted: list[int] = []

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                accepted.append(store.put("u1", b"%d" % n).version)
            except SessionFrozenError:
                return

    thread = threading.Thread(target=write)
    thread.start()
    while not accepted:
        time.sleep(0.001)
    frozen = store.freeze("u1")
    stop.set()
    thread.join()

    assert store.get("u1") == frozen
    assert max(accepted) == frozen.version


def test_the_default_stores_are_sqlite_files_under_the_serving_folder(
    settings: Settings,
) -> None:
    stores = open_session_stores(settings)
    try:
        stores["aws-us-east-1"].put("u1", b"x")
        assert stores["aws-us-east-1"] is stores["aws-us-east-1"]
    finally:
        stores.close()
    assert (settings.serving_dir / "sessions" / "aws-us-east-1.sqlite").is_file()


def test_settings_choose_redis_or_s3_stores(
    settings: Settings, redis_prefix: str, s3_buckets: Callable[[str], str], moto_server: str
) -> None:
    region = "aws-us-east-1"
    bucket = s3_buckets(region)
    chosen = {
        "redis": {"session_store": "redis", "redis_prefix": redis_prefix},
        "s3": {
            "session_store": "s3",
            "session_s3_bucket": bucket.replace(region, "{region}"),
            "session_s3_endpoint_url": moto_server,
        },
    }
    for kind, fields in chosen.items():
        router = settings.router.model_copy(update=fields)
        stores = open_session_stores(settings.model_copy(update={"router": router}))
        try:
            stores[region].put("u1", kind.encode())
            assert stores[region].get("u1").data == kind.encode()
            assert type(stores[region]).__name__.lower().startswith(kind)
        finally:
            stores.close()
