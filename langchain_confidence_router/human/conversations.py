"""Per-conversation counts shared by every replica: clarify-once in the SQL store or in Redis.

``human.clarify.state`` picks where the count lives:

* ``memory`` (default): this process only (the core's :class:`~..core.human.ClarifyLedger`);
* ``store``: the ``cr_conversations`` table of the review store (SQLite locally, PostgreSQL across
  replicas); one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE count < limit`` per claim;
* ``redis``: one key per conversation, counted by a Lua script (atomic on the server) that expires
  the key ``ttl_s`` after the last question. The LiteLLM proxy's ``REDIS_URL`` / ``REDIS_HOST``,
  ``REDIS_PORT``, ``REDIS_PASSWORD`` are used when ``human.clarify.url`` is not set.

A claim is one round trip, made only for requests whose confidence lands in the clarify band; the drive
loop runs it in a worker thread on async paths. When the state cannot be reached, the request asks no
question and escalates, and its trace says why. Both libraries are imported lazily (``store`` and
``redis`` extras), so the package imports without them.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any
from urllib.parse import quote

from ..core.config import RouterConfig
from ..core.engine import register_clarify_state
from ..core.human import ClarifyState

__all__ = ["RedisClarifyState", "StoreClarifyState", "redis_url_from_env"]

#: Keys of the Redis counts (a conversation key is at most 255 characters, from the adapters).
REDIS_PREFIX = "confidence-router:clarify:"

# KEYS[1] the conversation, ARGV[1] the limit, ARGV[2] the TTL in seconds: 1 when counted, 0 when full.
_CLAIM_LUA = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], n + 1, 'EX', ARGV[2])
return 1
"""


class StoreClarifyState(ClarifyState):
    """Clarify counts in the review store's ``cr_conversations`` table (shared through the database)."""

    blocking = True
    name = "store"

    def __init__(self, store: Any, *, ttl_s: float, timeout_s: float) -> None:
        self.store, self.ttl_s, self.timeout_s = store, ttl_s, timeout_s

    def claim(self, key: str, limit: int) -> bool:
        if len(key) > 128:  # the column holds 255; a long caller-chosen key is stored as its digest
            key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        return bool(self.store.claim_clarify(key, limit, self.ttl_s))


class RedisClarifyState(ClarifyState):
    """Clarify counts in Redis: one expiring key per conversation, claimed by a server-side script."""

    blocking = True
    name = "redis"

    def __init__(self, client: Any, *, ttl_s: float, timeout_s: float, prefix: str = REDIS_PREFIX) -> None:
        self.client, self.ttl_s, self.timeout_s, self.prefix = client, ttl_s, timeout_s, prefix
        self._script = client.register_script(_CLAIM_LUA)

    @classmethod
    def from_url(cls, url: str, *, ttl_s: float, timeout_s: float) -> RedisClarifyState:
        import redis  # the `redis` extra (litellm[proxy] installs it too)

        # socket timeouts bound a blocking caller too: an unreachable Redis fails fast, the request escalates
        client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        return cls(client, ttl_s=ttl_s, timeout_s=timeout_s)

    def claim(self, key: str, limit: int) -> bool:
        ttl = max(1, round(self.ttl_s))
        return bool(self._script(keys=[self.prefix + key], args=[limit, ttl]))


def redis_url_from_env(env: dict[str, str] | None = None) -> str | None:
    """The Redis the LiteLLM proxy is configured with: ``REDIS_URL``, else ``REDIS_HOST`` (+ port, password)."""
    env = dict(os.environ if env is None else env)
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    host = env.get("REDIS_HOST")
    if not host:
        return None
    user, password = env.get("REDIS_USERNAME", ""), env.get("REDIS_PASSWORD", "")
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if password else ""
    scheme = "rediss" if env.get("REDIS_SSL", "").lower() in ("1", "true", "yes") else "redis"
    return f"{scheme}://{auth}{host}:{env.get('REDIS_PORT', '6379')}/0"


# ---------------------------------------------------------------- wiring from a configuration

_states: dict[tuple[str, str, float, float], ClarifyState] = {}  # one per operator setting, not per request
_states_lock = threading.Lock()


def _cached(kind: str, url: str, ttl_s: float, timeout_s: float, make: Any) -> ClarifyState:
    with _states_lock:
        key = (kind, url, ttl_s, timeout_s)
        if key not in _states:
            _states[key] = make()
        return _states[key]


def store_state(config: RouterConfig) -> ClarifyState:
    human = config.human
    assert human is not None
    clarify = human.clarify
    target = clarify.url or human.store
    if not target:
        raise ValueError("human.clarify.state 'store' needs human.clarify.url or human.store (a SQLite path or "
                         "a postgresql:// URL)")
    if "://" not in target:
        target = str(config.resolve_path(target))

    def make() -> ClarifyState:
        from .store import open_store  # the `store` extra: SQLAlchemy

        return StoreClarifyState(open_store(target), ttl_s=clarify.ttl_s, timeout_s=clarify.timeout_s)

    return _cached("store", target, clarify.ttl_s, clarify.timeout_s, make)


def redis_state(config: RouterConfig) -> ClarifyState:
    human = config.human
    assert human is not None
    clarify = human.clarify
    url = clarify.url or redis_url_from_env()
    if not url:
        raise ValueError("human.clarify.state 'redis' needs human.clarify.url (redis://host:port/db) or the "
                         "proxy's REDIS_URL / REDIS_HOST environment variables")
    return _cached("redis", url, clarify.ttl_s, clarify.timeout_s,
                   lambda: RedisClarifyState.from_url(url, ttl_s=clarify.ttl_s, timeout_s=clarify.timeout_s))


register_clarify_state("store", store_state)
register_clarify_state("redis", redis_state)
