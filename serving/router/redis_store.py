"""Router state in Redis (production); see ``serving.router.store``.

Every key starts with the configured prefix:

- ``config:current``, ``config:previous``: hashes {version, body}; ``generation``: a counter;
- ``routes``: a hash user_id → RouteState JSON;
- ``intents``: a hash intent_id → SwitchoverIntent JSON, and ``intents:<status>``: sorted sets
  of intent ids by creation time;
- ``rejections``: a list of Rejection JSON, newest first, trimmed to ``rejections_kept``.

Multi-key changes run in MULTI/EXEC transactions; the config swap and intent transitions are
compare-and-set with WATCH, so an admin push or an executor may run beside the router. A user's
route is read, updated and written back by the probe handler: one router process must own a
given user's probes (one worker, or users sharded across workers), as with SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

import redis

from serving.router.models import (
    IntentStatus,
    Rejection,
    RouteState,
    RoutingConfig,
    StoredConfig,
    SwitchoverIntent,
)
from serving.router.store import NoPreviousConfigError, StaleVersionError

T = TypeVar("T")
INTENT_STATUSES: tuple[IntentStatus, ...] = ("pending", "executing", "done", "failed")

# A new intent is indexed under its status; an existing one (a retried save) is left alone.
ADD_INTENT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 0
"""


# Take the lease when free (or expired) or renew it when ours: one atomic step on the server.
HOLD_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisRouterStore:
    """The router's state under one key prefix of a Redis database."""

    kind = "redis"

    def __init__(self, url: str, prefix: str, rejections_kept: int) -> None:
        self.prefix = prefix
        self.rejections_kept = rejections_kept
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
        self._add_intent = self._redis.register_script(ADD_INTENT)
        self._hold_lease = self._redis.register_script(HOLD_LEASE)
        self._release_lease = self._redis.register_script(RELEASE_LEASE)

    def _key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def generation(self) -> int:
        return int(self._redis.get(self._key("generation")) or 0)

    def current_config(self) -> StoredConfig | None:
        return self._config("config:current")

    def previous_config(self) -> StoredConfig | None:
        return self._config("config:previous")

    def _config(self, name: str) -> StoredConfig | None:
        body = self._redis.hget(self._key(name), "body")
        return StoredConfig.model_validate_json(body) if body else None

    def put_config(self, config: RoutingConfig, pushed_at: datetime) -> None:
        current, previous = self._key("config:current"), self._key("config:previous")
        body = StoredConfig(config=config, pushed_at=pushed_at).model_dump_json()

        def swap(pipe: redis.client.Pipeline) -> None:
            in_force = pipe.hget(current, "version")
            if in_force is not None and config.version <= int(in_force):
                raise StaleVersionError(config.version, int(in_force))
            pipe.multi()
            if in_force is not None:
                pipe.rename(current, previous)
            else:
                pipe.delete(previous)
            pipe.hset(current, mapping={"version": config.version, "body": body})
            pipe.incr(self._key("generation"))

        self._watched(swap, current)

    def rollback_config(self) -> StoredConfig:
        current, previous = self._key("config:current"), self._key("config:previous")

        def restore(pipe: redis.client.Pipeline) -> StoredConfig:
            body = pipe.hget(previous, "body")
            if body is None:
                raise NoPreviousConfigError("no previous config to roll back to")
            pipe.multi()
            pipe.rename(previous, current)
            pipe.incr(self._key("generation"))
            return StoredConfig.model_validate_json(body)

        return self._watched(restore, current, previous)

    def routes(self, user_ids: Sequence[str]) -> dict[str, RouteState]:
        ids = list(user_ids)
        if not ids:
            return {}
        bodies = self._redis.hmget(self._key("routes"), ids)
        return {
            user: RouteState.from_json(body)
            for user, body in zip(ids, bodies, strict=True)
            if body is not None
        }

    def hold_executor_lease(self, holder: str, ttl_s: float) -> bool:
        return bool(self._hold_lease(keys=[self._key("executor-lease")],
                                     args=[holder, max(1, round(ttl_s * 1000))]))  # fmt: skip

    def release_executor_lease(self, holder: str) -> None:
        self._release_lease(keys=[self._key("executor-lease")], args=[holder])

    def route_user_ids(self) -> list[str]:
        # HSCAN, not HKEYS: a large hash is read in pages without blocking the server.
        pages = self._redis.hscan_iter(self._key("routes"), count=1000)
        return sorted(user.decode() for user, _ in pages)

    def save(self, routes: Sequence[RouteState], intents: Sequence[SwitchoverIntent]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        if routes:
            pipe.hset(self._key("routes"), mapping={r.user_id: r.to_json() for r in routes})
        for intent in intents:
            self._add_intent(
                keys=[self._key("intents"), self._key(f"intents:{intent.status}")],
                args=[intent.intent_id, intent.model_dump_json(), intent.created_at.timestamp()],
                client=pipe,
            )
        pipe.execute()

    def intent(self, intent_id: str) -> SwitchoverIntent | None:
        body = self._redis.hget(self._key("intents"), intent_id)
        return SwitchoverIntent.model_validate_json(body) if body else None

    def intents_by_id(self, intent_ids: Sequence[str]) -> dict[str, SwitchoverIntent]:
        ids = list(dict.fromkeys(intent_ids))
        if not ids:
            return {}
        bodies = self._redis.hmget(self._key("intents"), ids)
        return {
            intent_id: SwitchoverIntent.model_validate_json(body)
            for intent_id, body in zip(ids, bodies, strict=True)
            if body is not None
        }

    def intent_statuses(self, intent_ids: Sequence[str]) -> dict[str, IntentStatus]:
        ids = list(dict.fromkeys(intent_ids))
        if not ids:
            return {}
        bodies = self._redis.hmget(self._key("intents"), ids)
        return {
            intent_id: json.loads(body)["status"]
            for intent_id, body in zip(ids, bodies, strict=True)
            if body is not None
        }

    def intents(
        self, status: IntentStatus | None = None, limit: int = 1000
    ) -> list[SwitchoverIntent]:
        statuses = INTENT_STATUSES if status is None else (status,)
        scored: list[tuple[float, str]] = []
        for name in statuses:
            members = self._redis.zrange(
                self._key(f"intents:{name}"), 0, limit - 1, withscores=True
            )
            scored.extend((score, member.decode()) for member, score in members)
        ids = [intent_id for _, intent_id in sorted(scored)[:limit]]
        if not ids:
            return []
        bodies = self._redis.hmget(self._key("intents"), ids)
        return [SwitchoverIntent.model_validate_json(b) for b in bodies if b is not None]

    def transition_intent(
        self,
        intent_id: str,
        expected: IntentStatus,
        new: IntentStatus,
        at: datetime,
        step: str | None = None,
    ) -> bool:
        intents = self._key("intents")

        def move(pipe: redis.client.Pipeline) -> bool:
            body = pipe.hget(intents, intent_id)
            if body is None:
                return False
            intent = SwitchoverIntent.model_validate_json(body)
            if intent.status != expected:
                return False
            steps = [*intent.steps, step] if step else intent.steps
            changed = intent.model_copy(update={"status": new, "updated_at": at, "steps": steps})
            pipe.multi()
            pipe.hset(intents, intent_id, changed.model_dump_json())
            pipe.zrem(self._key(f"intents:{expected}"), intent_id)
            pipe.zadd(self._key(f"intents:{new}"), {intent_id: intent.created_at.timestamp()})
            return True

        return self._watched(move, intents)

    def record_rejection(self, rejection: Rejection) -> None:
        if self.rejections_kept == 0:
            return
        key = self._key("rejections")
        pipe = self._redis.pipeline(transaction=True)
        pipe.lpush(key, rejection.model_dump_json())
        pipe.ltrim(key, 0, self.rejections_kept - 1)
        pipe.execute()

    def rejections(self, limit: int = 100) -> list[Rejection]:
        bodies = self._redis.lrange(self._key("rejections"), 0, limit - 1)
        return [Rejection.model_validate_json(body) for body in bodies]

    def ping(self) -> None:
        self._redis.ping()

    def close(self) -> None:
        self._redis.close()

    def _watched(self, change: Callable[[redis.client.Pipeline], T], *keys: str) -> T:
        """Run ``change`` under WATCH on ``keys``, retrying when another client got there first.

        ``change`` reads in immediate mode, calls ``pipe.multi()`` and queues its writes; its
        return value is returned once the transaction has committed.
        """
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    result = change(pipe)
                    if pipe.explicit_transaction:
                        pipe.execute()
                    return result
                except redis.WatchError:
                    continue
                finally:
                    pipe.reset()
