"""Rate limits with the ``limits`` library: in memory by default, shared through Redis when
``REALNAME_REDIS_URL`` is set (so they hold across API processes).

Keys are PII-free: blind indexes and ids, never a phone number or ID number.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import redis.asyncio
from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    parse_many,
)
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from app import metrics
from app.errors import ProblemError
from app.settings import Settings


@dataclass(frozen=True)
class Refusal:
    retry_after: int


class RateLimits:
    """The service's limits: SMS per phone, failed codes per identity, requests per client."""

    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self._pool: redis.asyncio.ConnectionPool | None = None
        if storage is None:
            if settings.redis_url:
                # We own the pool (redis-py) so that shutdown can close its connections.
                self._pool = redis.asyncio.ConnectionPool.from_url(settings.redis_url)
                uri = settings.redis_url.replace("redis://", "async+redis://", 1)
                storage = RedisStorage(
                    uri,
                    implementation="redispy",
                    key_prefix=settings.redis_prefix,
                    # limits types **options as scalars, but documents connection_pool.
                    connection_pool=self._pool,  # type: ignore[arg-type]
                )
            else:
                storage = MemoryStorage()
        self.storage: Storage = storage
        #: A client on the same pool, for other shared state (None without Redis).
        self.redis: redis.asyncio.Redis | None = (
            redis.asyncio.Redis(connection_pool=self._pool) if self._pool is not None else None
        )
        self.limiter = MovingWindowRateLimiter(self.storage)
        # The per-client request quota is counted on every request: a sliding window counter
        # costs one O(1) Redis call, where the exact moving window keeps a list per client.
        self.client_limiter = SlidingWindowCounterRateLimiter(self.storage)
        self.sms_per_phone: list[RateLimitItem] = list(parse_many(settings.sms_phone_limits))
        self.failed_codes = RateLimitItemPerDay(settings.failed_codes_per_identity)
        self.client_default = settings.client_requests_per_minute
        self.admin_login: list[RateLimitItem] = list(parse_many(settings.admin_login_limits))
        self.admin_login_ip: list[RateLimitItem] = list(parse_many(settings.admin_login_ip_limits))
        self.admin_records = RateLimitItemPerHour(settings.admin_records_per_hour)

    async def _retry_after(self, item: RateLimitItem, *ids: str) -> int:
        stats = await self.limiter.get_window_stats(item, *ids)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def _first_refusal(self, items: list[RateLimitItem], *ids: str) -> Refusal | None:
        for item in items:
            if not await self.limiter.test(item, *ids):
                return Refusal(await self._retry_after(item, *ids))
        return None

    # -- SMS per phone --------------------------------------------------------------------------
    # Test-mode keys count in a namespace of their own: a free test key must not be able to use
    # up (or probe) the SMS quota of a real person's phone.
    async def check_sms(self, mode: str, phone_bidx: str) -> Refusal | None:
        """Would one more SMS to this phone be allowed? (Does not count one.)"""
        return await self._first_refusal(self.sms_per_phone, "sms", mode, phone_bidx)

    async def hit_sms(self, mode: str, phone_bidx: str) -> Refusal | None:
        """Count one SMS to this phone, or refuse it without counting."""
        refusal = await self.check_sms(mode, phone_bidx)
        if refusal is not None:
            return refusal
        for item in self.sms_per_phone:
            if not await self.limiter.hit(item, "sms", mode, phone_bidx):
                return Refusal(await self._retry_after(item, "sms", mode, phone_bidx))
        return None

    # -- failed codes per identity ----------------------------------------------------------------
    # Counted per (client, person): one client's users failing codes must not lock the same
    # person out at another client.
    async def failed_codes_exhausted(self, client_id: str, identity_id: str) -> bool:
        return not await self.limiter.test(self.failed_codes, "codes", client_id, identity_id)

    async def record_failed_code(self, client_id: str, identity_id: str) -> None:
        await self.limiter.hit(self.failed_codes, "codes", client_id, identity_id)

    async def reset_failed_codes(self, client_id: str, identity_id: str) -> None:
        await self.limiter.clear(self.failed_codes, "codes", client_id, identity_id)

    # -- requests per client ----------------------------------------------------------------------
    async def hit_client(self, client_id: str, per_minute: int) -> Refusal | None:
        item = RateLimitItemPerMinute(per_minute or self.client_default)
        if await self.client_limiter.hit(item, "client", client_id):
            return None
        stats = await self.client_limiter.get_window_stats(item, "client", client_id)
        return Refusal(max(1, math.ceil(stats.reset_time - time.time())))

    # -- admins ---------------------------------------------------------------------------------
    async def login_refused(self, username_key: str, address: str) -> Refusal | None:
        """Refuse a login attempt while this (username, address) or this address has failed
        too often. Never per account alone: a victim cannot be locked out from elsewhere."""
        return await self._first_refusal(self.admin_login, "login", username_key, address) or (
            await self._first_refusal(self.admin_login_ip, "login-ip", address)
        )

    async def record_login_failure(self, username_key: str, address: str) -> None:
        for item in self.admin_login:
            await self.limiter.hit(item, "login", username_key, address)
        for item in self.admin_login_ip:
            await self.limiter.hit(item, "login-ip", address)

    async def hit_record_view(self, admin_id: str) -> bool:
        """Count one personal record opened by ``admin_id``; False once over the hourly cap."""
        return bool(await self.limiter.hit(self.admin_records, "records", admin_id))

    async def reset(self) -> None:
        await self.storage.reset()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()


def raise_refusal(refusal: Refusal | None, detail: str, *, limit: str = "other") -> None:
    if refusal is not None:
        metrics.RATE_LIMITED.labels(limit).inc()
        raise ProblemError(
            "rate_limited",
            detail,
            headers={"Retry-After": str(refusal.retry_after)},
            extra={"retry_after": refusal.retry_after},
        )
