"""Per-process caches for the hot read paths: API-key authentication and token introspection.

Backends introspect a token on every request they serve, so introspection must not cost three
database round trips each time. What is cached, and why it stays correct:

- **API keys** (only with Redis, ``api_key_cache_seconds``): the keyed hash of a key -> its
  client's columns and the key's expiry, under a shared epoch of their own, exactly as token
  states below: revoking or rotating a key and disabling a client move it after the commit, so
  every process stops accepting the key at once. Without Redis keys are read on every request.
- **Token signatures** (``token_cache_seconds``): (client, token) -> its verified claims. A pure
  function of the token and the published keys (public keys are never changed, only retired
  after their tokens expire); ``exp`` and ``nbf`` are checked again on every use.
- **Token states** (only with Redis, ``token_cache_seconds``): jti -> (revoked, verification
  status, verification expiry). Every change that can make a token inactive (revocation,
  erasure, correction, a verification leaving ``verified``) moves a shared **epoch** in Redis
  (a new random value) after its transaction commits and before its caller is answered; if
  Redis cannot be told, the caller gets 503 and retries. Each introspection reads the
  epoch (one Redis ``GET``) and uses a cached state only if it was read under the same epoch,
  so a revocation is seen by every process at once. An entry is stored under the epoch read
  *before* its database read, so a revocation committed in between cannot hide behind it.
  Without Redis, or when Redis does not answer, token states are always read from the database.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import redis.asyncio
from cachetools import TTLCache
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics

logger = logging.getLogger(__name__)

#: ``session.info`` key of the callbacks a session scope awaits after it commits.
AFTER_COMMIT = "after_commit"
#: ``session.info`` key under which a runtime's sessions find its :class:`TokenStates`.
TOKEN_STATES = "token_states"  # noqa: S105 (a dictionary key, not a secret)
#: ``session.info`` key under which a runtime's sessions find its :class:`ApiKeyStates`.
API_KEY_STATES = "api_key_states"

V = TypeVar("V")

_MAX_ENTRIES = 100_000
#: A stalled Redis must not stall introspection: past this, states come from the database.
REDIS_TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class TokenState:
    verification_id: str
    revoked: bool
    status: str
    expires_at: datetime | None


class EpochCache(Generic[V]):
    """key -> value, valid while a shared epoch in Redis is unchanged (see the module doc).

    ``name`` names the epoch's Redis key and the cache's lookup metric."""

    def __init__(
        self,
        client: redis.asyncio.Redis | None,
        prefix: str,
        ttl: float,
        *,
        name: str = "token",
        metric: str = "token_state",
    ) -> None:
        self._redis = client
        # Outside the rate limits' ``prefix:*`` keys (which a limits reset deletes); "|" cannot
        # occur in a prefix, so no other deployment's key can collide with it.
        self._key = f"{prefix}|{name}-epoch"
        self._entries: TTLCache[str, tuple[bytes, V]] | None = (
            TTLCache(_MAX_ENTRIES, ttl) if client is not None and ttl > 0 else None
        )
        self._hit = metrics.CACHE_LOOKUPS.labels(metric, "hit")
        self._miss = metrics.CACHE_LOOKUPS.labels(metric, "miss")

    @property
    def enabled(self) -> bool:
        return self._entries is not None

    @property
    def shared(self) -> bool:
        """Whether other processes may cache under this epoch (Redis is configured): then
        every change must move it, even where this process itself does not cache."""
        return self._redis is not None

    async def epoch(self) -> bytes | None:
        """The current epoch, or None when states must come from the database.

        Epochs are random values, never a counter: if the key is lost (a Redis restart without
        persistence, eviction, a flush), the next value cannot match an old entry."""
        if self._redis is None or self._entries is None:
            return None
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                value = await self._redis.get(self._key)
                if value is None:  # first use, or lost: start a new one (racing ones agree)
                    await self._redis.set(self._key, uuid.uuid4().hex, nx=True)
                    value = await self._redis.get(self._key)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            logger.warning("token epoch unreadable", extra={"error_type": type(exc).__name__})
            return None
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    def get(self, jti: str, epoch: bytes | None) -> V | None:
        if epoch is None or self._entries is None:
            return None
        entry = self._entries.get(jti)
        if entry is None or entry[0] != epoch:
            self._miss.inc()
            return None
        self._hit.inc()
        return entry[1]

    def put(self, jti: str, epoch: bytes | None, state: V) -> None:
        if epoch is not None and self._entries is not None:
            self._entries[jti] = (epoch, state)

    async def bump(self) -> None:
        """Invalidate every process's cached states (called after a commit that revoked).

        Raises :class:`EpochNotMoved` when Redis cannot be told after a few tries: the caller
        must not be told that the revocation is in force everywhere (an API caller gets 503 and
        retries; the retry moves the epoch again)."""
        if self._entries is not None:
            self._entries.clear()
        if self._redis is None:
            return
        for attempt in range(3):
            try:
                async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                    await self._redis.set(self._key, uuid.uuid4().hex)
                return
            except (redis.RedisError, OSError, TimeoutError) as exc:
                error = type(exc).__name__
                await asyncio.sleep(0.05 * (attempt + 1))
        # Other processes keep their entries until they expire (token_cache_seconds).
        logger.error("token epoch not moved", extra={"error_type": error})
        raise EpochNotMoved

    def clear(self) -> None:
        """Drop this process's entries (tests start each case from an empty cache)."""
        if self._entries is not None:
            self._entries.clear()


class TokenStates(EpochCache[TokenState]):
    """jti -> :class:`TokenState`, valid while the shared revocation epoch is unchanged."""


class ApiKeyStates(EpochCache[dict[str, Any]]):
    """keyed hash of an API key -> its client's columns and the key's id and expiry, valid
    while the shared API-key epoch is unchanged."""

    def __init__(self, client: redis.asyncio.Redis | None, prefix: str, ttl: float) -> None:
        super().__init__(client, prefix, ttl, name="api-key", metric="api_key")


class EpochNotMoved(Exception):
    """A revocation committed, but other processes could not be told through Redis."""


def tokens_changed(session: AsyncSession) -> None:
    """Record that this transaction may have made tokens inactive: once it commits, the
    session scope bumps the epoch before the caller is answered."""
    states = session.info.get(TOKEN_STATES)
    if isinstance(states, TokenStates) and states.enabled:
        after_commit(session, "token_states", states.bump)


def api_keys_changed(session: AsyncSession) -> None:
    """Record that this transaction revoked, rotated or disabled: once it commits, every
    process drops its cached API keys before the caller is answered."""
    states = session.info.get(API_KEY_STATES)
    if isinstance(states, ApiKeyStates) and states.shared:
        after_commit(session, "api_key_states", states.bump)


def after_commit(session: AsyncSession, name: str, callback: Callable[[], Awaitable[None]]) -> None:
    hooks: dict[str, Callable[[], Awaitable[None]]] = session.info.setdefault(AFTER_COMMIT, {})
    hooks[name] = callback


async def run_after_commit(session: AsyncSession) -> None:
    """Await the session's after-commit callbacks; shielded, so that a request or task
    cancelled right after its commit still tells the other processes."""
    hooks: dict[str, Callable[[], Awaitable[None]]] = session.info.pop(AFTER_COMMIT, {})
    for callback in hooks.values():
        await asyncio.shield(callback())


class TtlMap:
    """A bounded map whose entries expire, counted in ``realname_cache_lookups_total`` under
    ``name``; a thin typed face over ``cachetools.TTLCache`` (0 seconds disables it)."""

    def __init__(self, name: str, ttl: float, maxsize: int = 10_000) -> None:
        self._cache: TTLCache[Any, Any] | None = TTLCache(maxsize, ttl) if ttl > 0 else None
        self._hit = metrics.CACHE_LOOKUPS.labels(name, "hit")
        self._miss = metrics.CACHE_LOOKUPS.labels(name, "miss")

    def get(self, key: Any) -> Any:
        if self._cache is None:
            return None
        value = self._cache.get(key)
        (self._miss if value is None else self._hit).inc()
        return value

    def put(self, key: Any, value: Any) -> None:
        if self._cache is not None:
            self._cache[key] = value

    def clear(self) -> None:
        if self._cache is not None:
            self._cache.clear()
