"""Sessions of one region in Redis (production): a hash per session and a set of its users.

Keys: ``<prefix><region>:session:<user_id>`` (fields data, version, frozen, checksum) and
``<prefix><region>:users``. Compare-and-set is one Lua script, which Redis runs atomically:
it checks the version, frozen flag and checksum that were read, then writes or deletes the
hash and keeps the user set in step.
"""

from __future__ import annotations

import redis

from serving.sessions.state import SessionState
from serving.sessions.store import CasSessionStore

Token = tuple[bytes, bytes, bytes]

# KEYS: session hash, user set. ARGV: expect ('absent' | 'present'), version, frozen, checksum,
# then action ('delete' | 'write'), user_id, data, version, frozen, checksum.
SWAP = """
local current = redis.call('HMGET', KEYS[1], 'version', 'frozen', 'checksum')
if ARGV[1] == 'absent' then
    if current[1] then return 0 end
elseif current[1] ~= ARGV[2] or current[2] ~= ARGV[3] or current[3] ~= ARGV[4] then
    return 0
end
if ARGV[5] == 'delete' then
    redis.call('DEL', KEYS[1])
    redis.call('SREM', KEYS[2], ARGV[6])
else
    redis.call('HSET', KEYS[1], 'data', ARGV[7], 'version', ARGV[8], 'frozen', ARGV[9],
               'checksum', ARGV[10])
    redis.call('SADD', KEYS[2], ARGV[6])
end
return 1
"""


class RedisSessionStore(CasSessionStore):
    """The sessions of one region under a key prefix of a Redis database."""

    def __init__(self, url: str, prefix: str, region: str) -> None:
        self.region = region
        self._base = f"{prefix}{region}:"
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
        self._swap_script = self._redis.register_script(SWAP)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()

    def _key(self, user_id: str) -> str:
        return f"{self._base}session:{user_id}"

    def _load(self, user_id: str) -> tuple[SessionState, Token] | None:
        data, version, frozen, checksum = self._redis.hmget(
            self._key(user_id), ["data", "version", "frozen", "checksum"]
        )
        if version is None:
            return None
        state = SessionState.of(user_id, data, int(version), frozen == b"1")
        return state, (version, frozen, checksum)

    def _swap(self, user_id: str, token: Token | None, new: SessionState | None) -> bool:
        expect = ["absent", "", "", ""] if token is None else ["present", *token]
        if new is None:
            action = ["delete", user_id, "", "", "", ""]
        else:
            action = [
                "write", user_id, new.data, str(new.version), "1" if new.frozen else "0",
                new.checksum,
            ]  # fmt: skip
        keys = [self._key(user_id), f"{self._base}users"]
        return bool(self._swap_script(keys=keys, args=[*expect, *action]))

    def _users(self) -> list[str]:
        return [member.decode() for member in self._redis.smembers(f"{self._base}users")]
