"""Per-process caches for the hot read paths: API-key authentication and token introspection.

Backends introspect a token on every request they serve, so a repeated introspection must not
touch the database, nor wait on Redis for anything but the client's shared request quota. What
is cached, and why it stays correct:

- **API keys** (only with Redis, ``api_key_cache_seconds``): the keyed hash of a key -> its
  client's columns and the key's expiry. Revoking or rotating a key and disabling a client
  invalidate every process's entries (below) before the change is answered.
- **Token signatures** (kept until the token's ``exp``; none with ``token_cache_seconds=0``):
  (client, token) -> its verified claims. A pure function of the token and the published keys
  (public keys are never changed, only retired after their tokens expire), so a token's
  signature is verified once per process; ``exp`` and ``nbf`` are checked again on every use.
- **Token states** (only with Redis, ``token_cache_seconds``): jti -> (revoked, verification
  status, verification expiry). Revocation, erasure, correction, a verification leaving
  ``verified`` and emergency revocations invalidate every process's entries before the
  change is answered.

**Pushed invalidation.** Each API process keeps one Redis pub/sub subscription
(:class:`Invalidations`) to a channel of its deployment. A change that can make a cached entry
wrong, once its transaction has committed and before its caller is answered, clears this
process's entries and PUBLISHes; every subscribed process clears its entries and
**acknowledges** (``RPUSH`` to a list named in the message); the changer waits until as many
acknowledgements as PUBLISH reported receivers have arrived. So when the caller hears "done",
every process that could answer from a cache has already dropped the entry - across hosts,
whatever the network delays. If Redis cannot be told, or an acknowledgement does not arrive in
time, the caller gets 503 (:class:`EpochNotMoved`) and retries; the change itself is committed.

A process answers from these caches only while its subscription is confirmed and heard from
(a ``PING`` every second when the channel is quiet; silent for 3 s counts as down). When the
subscription is down, not yet confirmed, or being re-established, every lookup reads the
database; entries are kept under a local **epoch** that moves on every invalidation and every
loss or (re)start of the subscription, and an entry is stored under the epoch read *before*
its database read, so a change committed in between cannot hide behind it. Without Redis there
is nobody to tell: API keys and token states are read from the database on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import redis.asyncio
from cachetools import TLRUCache, TTLCache
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics

logger = logging.getLogger(__name__)

#: ``session.info`` key of the callbacks a session scope awaits after it commits.
AFTER_COMMIT = "after_commit"
#: ``session.info`` key under which a runtime's sessions find its :class:`TokenStates`.
TOKEN_STATES = "token_states"  # noqa: S105 (a dictionary key, not a secret)
#: ``session.info`` key under which a runtime's sessions find its :class:`ApiKeyStates`.
API_KEY_STATES = "api_key_states"
#: ``session.info`` key under which a runtime's sessions find its :class:`MeasureStates`.
MEASURE_STATES = "measure_states"
#: ``session.info`` key under which a runtime's sessions find its :class:`EndpointStates`.
ENDPOINT_STATES = "endpoint_states"

V = TypeVar("V")

_MAX_ENTRIES = 100_000
#: A stalled Redis must not stall a change for long: past this, the changer answers 503.
REDIS_TIMEOUT_SECONDS = 0.5
#: How long a changer waits for every subscribed process to acknowledge an invalidation (a
#: round), and how many rounds it publishes before it gives up (503 to its caller).
ACK_TIMEOUT_SECONDS = 1.0
PUBLISH_ROUNDS = 3
#: A quiet subscription is pinged this often; silent for ``STALE_AFTER_SECONDS``, it is down.
HEARTBEAT_SECONDS = 1.0
STALE_AFTER_SECONDS = 3.0
_RECONNECT_MAX_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class TokenState:
    verification_id: str
    revoked: bool
    status: str
    expires_at: datetime | None


class EpochNotMoved(Exception):
    """A change committed, but other processes could not be told (or did not confirm)."""


class Invalidations:
    """This process's subscription to its deployment's invalidation channel, and the way to
    publish on it (see the module doc). Without Redis it does nothing and is never healthy."""

    def __init__(self, client: redis.asyncio.Redis | None, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        db = client.connection_pool.connection_kwargs.get("db", 0) if client is not None else 0
        # Pub/sub channels ignore the database number: name it, so that deployments sharing
        # one Redis server (in other databases) never hear each other.
        self.channel = f"{prefix}|{db}|invalidate"
        #: The subscription's connection name (``CLIENT LIST``): which processes listen.
        self.client_name = f"{prefix}|invalidations"
        self._subscriber: redis.asyncio.Redis | None = None
        if client is not None:
            pool = client.connection_pool
            self._subscriber = redis.asyncio.Redis(
                connection_pool=redis.asyncio.ConnectionPool(
                    connection_class=pool.connection_class,
                    **{**pool.connection_kwargs, "client_name": self.client_name},
                )
            )
        self._caches: dict[str, list[EpochCache[Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = False
        self._heard = 0.0
        self._confirmed = asyncio.Event()
        self._lost = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    @property
    def healthy(self) -> bool:
        """Whether cached entries may be served: subscribed, and heard from lately."""
        return self._subscribed and time.monotonic() - self._heard < STALE_AFTER_SECONDS

    async def ready(self, within: float = 5.0) -> bool:
        """Wait (at most ``within`` seconds) until the subscription is confirmed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._confirmed.wait()
        return self.healthy

    async def lost(self) -> None:
        """Return once the subscription is (or was seen to be) down."""
        await self._lost.wait()

    def register(self, name: str, cache: EpochCache[Any]) -> None:
        self._caches.setdefault(name, []).append(cache)

    def start(self) -> None:
        """Subscribe in the background (API processes; idempotent). Until the subscription is
        confirmed, nothing is served from the caches."""
        if self._redis is not None and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="cache-invalidations"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._down()
        if self._subscriber is not None:
            await self._subscriber.connection_pool.disconnect()

    def _invalidate_all(self) -> None:
        for caches in self._caches.values():
            for cache in caches:
                cache.invalidate()

    def _down(self) -> None:
        if self._subscribed:
            metrics.INVALIDATION_SUBSCRIBED.set(0)
        self._subscribed = False
        self._confirmed.clear()
        self._lost.set()
        self._invalidate_all()

    async def _listen(self) -> None:
        assert self._subscriber is not None
        delay = 0.1
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(timeout=HEARTBEAT_SECONDS)
                    now = time.monotonic()
                    if message is None:
                        if self._subscribed and now - self._heard >= STALE_AFTER_SECONDS:
                            raise TimeoutError("invalidation subscription silent")
                        await pubsub.ping()
                        continue
                    self._heard = now
                    kind = message.get("type")
                    if kind == "subscribe":
                        # Whatever was published before this point was missed: start afresh.
                        self._invalidate_all()
                        self._subscribed = True
                        self._lost.clear()
                        self._confirmed.set()
                        metrics.INVALIDATION_SUBSCRIBED.set(1)
                        metrics.INVALIDATION_SUBSCRIPTIONS.inc()
                        delay = 0.1
                    elif kind == "message":
                        await self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError, TimeoutError) as exc:
                logger.warning(
                    "cache invalidation subscription lost", extra={"error_type": type(exc).__name__}
                )
            finally:
                self._down()
                await asyncio.shield(pubsub.aclose())
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_SECONDS)

    async def _apply(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        name, _, ack = text.partition(" ")
        caches = self._caches.get(name)
        if caches is None:  # a kind this version does not know: drop everything
            self._invalidate_all()
        else:
            for cache in caches:
                cache.invalidate()
        if ack and self._redis is not None:
            key = self._ack_key(ack)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.rpush(key, 1)
                pipe.expire(key, 60)
                await pipe.execute()

    def _ack_key(self, nonce: str) -> str:
        return f"{self._prefix}|ack|{nonce}"

    async def publish(self, name: str) -> None:
        """Tell every subscribed process to drop its ``name`` entries, and wait until each has
        confirmed. Raises :class:`EpochNotMoved` when Redis cannot be told (after a few tries)
        or a confirmation is still missing after :data:`PUBLISH_ROUNDS` rounds.

        A round that is not confirmed by every receiver is published again (with a new nonce):
        a process that was shutting down, or whose subscription broke, is no longer counted by
        the next PUBLISH (and one whose subscription is down serves nothing from its caches),
        while a live one confirms the next round too."""
        if self._redis is None:
            return
        receivers, confirmed = 0, 0
        for _ in range(PUBLISH_ROUNDS):
            receivers, confirmed = await self._publish_once(name)
            if confirmed >= receivers:
                return
            logger.warning(
                "cache invalidation not confirmed by every process; publishing again",
                extra={"receivers": receivers, "confirmed": confirmed},
            )
        logger.error(
            "cache invalidation not confirmed by every process",
            extra={"receivers": receivers, "confirmed": confirmed},
        )
        raise EpochNotMoved

    async def _publish_once(self, name: str) -> tuple[int, int]:
        """One PUBLISH and the wait for its confirmations: ``(receivers, confirmed)``."""
        assert self._redis is not None
        nonce = uuid.uuid4().hex
        error = "none"
        receivers: int | None = None
        for attempt in range(3):
            try:
                async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                    receivers = int(await self._redis.publish(self.channel, f"{name} {nonce}"))
                break
            except (redis.RedisError, OSError, TimeoutError) as exc:
                error = type(exc).__name__
                await asyncio.sleep(0.05 * (attempt + 1))
        if receivers is None:
            # Other processes keep their entries until they expire (token_cache_seconds).
            logger.error("cache invalidation not published", extra={"error_type": error})
            raise EpochNotMoved
        key = self._ack_key(nonce)
        confirmed = 0
        with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
            async with asyncio.timeout(ACK_TIMEOUT_SECONDS):
                while confirmed < receivers:
                    if await self._redis.blpop([key], timeout=ACK_TIMEOUT_SECONDS) is not None:
                        confirmed += 1
        return receivers, confirmed


class EpochCache(Generic[V]):
    """key -> value, served only while this process's invalidation subscription is healthy and
    no invalidation has arrived since the value was read (see the module doc). ``name`` names
    the kind of entry on the invalidation channel; ``metric`` the cache's lookup metric."""

    def __init__(
        self,
        bus: Invalidations | None,
        ttl: float,
        *,
        name: str = "token",
        metric: str = "token_state",
    ) -> None:
        self._bus = bus
        self.name = name
        self._epoch = 0
        self._entries: TTLCache[str, tuple[int, V]] | None = (
            TTLCache(_MAX_ENTRIES, ttl) if bus is not None and bus.enabled and ttl > 0 else None
        )
        self._hit = metrics.CACHE_LOOKUPS.labels(metric, "hit")
        self._miss = metrics.CACHE_LOOKUPS.labels(metric, "miss")
        if bus is not None:
            bus.register(name, self)

    @property
    def enabled(self) -> bool:
        return self._entries is not None

    @property
    def shared(self) -> bool:
        """Whether other processes may cache these entries (Redis is configured): then every
        change must be published, even where this process itself does not cache."""
        return self._bus is not None and self._bus.enabled

    def epoch(self) -> int | None:
        """The local epoch to read under, or None when values must come from the database."""
        if self._entries is None or self._bus is None or not self._bus.healthy:
            return None
        return self._epoch

    def get(self, key: str, epoch: int | None) -> V | None:
        if epoch is None or self._entries is None:
            return None
        entry = self._entries.get(key)
        if entry is None or entry[0] != self._epoch:
            self._miss.inc()
            return None
        self._hit.inc()
        return entry[1]

    def put(self, key: str, epoch: int | None, value: V) -> None:
        if epoch is not None and self._entries is not None and epoch == self._epoch:
            self._entries[key] = (epoch, value)

    def invalidate(self) -> None:
        """Drop this process's entries and move the epoch (a value read before is not kept)."""
        self._epoch += 1
        if self._entries is not None:
            self._entries.clear()

    async def bump(self) -> None:
        """Invalidate every process's entries (called after a commit that changed them).

        Raises :class:`EpochNotMoved` when other processes could not be told: the caller must
        not be told that the change is in force everywhere (an API caller gets 503 and
        retries; the retry publishes again)."""
        self.invalidate()
        if self.shared:
            assert self._bus is not None
            await self._bus.publish(self.name)

    def clear(self) -> None:
        """Drop this process's entries (tests start each case from an empty cache)."""
        self.invalidate()


class TokenStates(EpochCache[TokenState]):
    """client:jti -> :class:`TokenState`, dropped everywhere on every change that may make a
    token inactive."""

    def __init__(self, bus: Invalidations | None, ttl: float) -> None:
        super().__init__(bus, ttl, name="token", metric="token_state")


class ApiKeyStates(EpochCache[dict[str, Any]]):
    """keyed hash of an API key -> its client's columns and the key's id and expiry, dropped
    everywhere when a key is revoked or rotated or a client disabled."""

    def __init__(self, bus: Invalidations | None, ttl: float) -> None:
        super().__init__(bus, ttl, name="api-key", metric="api_key")


class MeasureStates(EpochCache[frozenset[tuple[str, str]]]):
    """The emergency measures in force, as (kind, scope) pairs: read by every registration,
    token issue and check, changed only by an operator's emergency action, which drops them
    everywhere before it is answered (so a suspension or quarantine holds at once)."""

    def __init__(self, bus: Invalidations | None, ttl: float) -> None:
        super().__init__(bus, ttl, name="emergency", metric="emergency_measures")


def measures_changed(session: AsyncSession) -> None:
    """Record that this transaction started or ended an emergency measure: once it commits,
    every process drops the measures it holds before the caller is answered."""
    states = session.info.get(MEASURE_STATES)
    if isinstance(states, MeasureStates) and states.shared:
        after_commit(session, "measure_states", states.bump)


class EndpointStates(EpochCache[tuple[str, tuple[tuple[str, str | None], ...]]]):
    """client id -> its mode and its enabled webhook endpoints (id, event filter): read with
    every event, dropped everywhere when an endpoint is created, deleted or disabled."""

    def __init__(self, bus: Invalidations | None, ttl: float) -> None:
        super().__init__(bus, ttl, name="endpoints", metric="webhook_endpoints")


def endpoints_changed(session: AsyncSession) -> None:
    """Record that this transaction created, deleted or disabled a webhook endpoint: once it
    commits, every process drops the endpoints it holds before the caller is answered."""
    states = session.info.get(ENDPOINT_STATES)
    if isinstance(states, EndpointStates) and states.shared:
        after_commit(session, "endpoint_states", states.bump)


def tokens_changed(session: AsyncSession) -> None:
    """Record that this transaction may have made tokens inactive: once it commits, the
    session scope invalidates every process's token states before the caller is answered."""
    states = session.info.get(TOKEN_STATES)
    if isinstance(states, TokenStates) and states.shared:
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


class ClaimsCache:
    """(client id, token) -> the token's verified claims, kept until the token expires (a
    token's signature is verified once per process); counted as ``token_claims``."""

    def __init__(self, enabled: bool = True, maxsize: int = _MAX_ENTRIES) -> None:
        self._cache: TLRUCache[tuple[str, str], dict[str, Any]] | None = (
            TLRUCache(maxsize, ttu=_until_exp, timer=time.time) if enabled else None
        )
        self._hit = metrics.CACHE_LOOKUPS.labels("token_claims", "hit")
        self._miss = metrics.CACHE_LOOKUPS.labels("token_claims", "miss")

    def get(self, key: tuple[str, str]) -> dict[str, Any] | None:
        if self._cache is None:
            return None
        value = self._cache.get(key)
        (self._miss if value is None else self._hit).inc()
        return value

    def put(self, key: tuple[str, str], claims: dict[str, Any]) -> None:
        if self._cache is not None:
            self._cache[key] = claims

    def clear(self) -> None:
        if self._cache is not None:
            self._cache.clear()


def _until_exp(_key: Any, claims: dict[str, Any], _now: float) -> float:
    return float(claims["exp"])
