"""Rate limits with the ``limits`` library: in memory by default, shared through Redis when
``REALNAME_REDIS_URL`` is set (so they hold across API processes).

Keys are PII-free: blind indexes and ids, never a phone number or ID number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import redis.asyncio
from cachetools import TTLCache
from limits import (
    RateLimitItem,
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    parse_many,
)
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

from app import metrics
from app.errors import ProblemError
from app.settings import Settings


@dataclass(frozen=True)
class Refusal:
    retry_after: int


#: Records one admin was shown in the last ``window`` seconds, one sorted-set member per distinct
#: record (score: when first shown). Refuses, adding nothing, when the new ones would pass ``cap``.
_SEE_RECORDS = """
local key, now, window, cap = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local new = 0
for i = 4, #ARGV do
  if not redis.call('ZSCORE', key, ARGV[i]) then new = new + 1 end
end
if new == 0 then return 1 end
if redis.call('ZCARD', key) + new > cap then return 0 end
for i = 4, #ARGV do redis.call('ZADD', key, 'NX', now, ARGV[i]) end
redis.call('EXPIRE', key, math.ceil(window))
return 1
"""


#: A process leases a client's shared quota in batches of 1/this of it (see hit_client).
CLIENT_LEASE_FRACTION = 100
#: How long an unused lease is kept (its units were counted when it was taken).
CLIENT_LEASE_SECONDS = 60


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
        self.day_limiter = FixedWindowRateLimiter(self.storage)
        # Per (client, phone): windows shorter than a day move; a day is a calendar day, so that
        # the client's own daily refusal and the platform's cap answer alike (see check_sms).
        limits = list(parse_many(settings.sms_phone_limits))
        self.sms_per_phone = [i for i in limits if i.get_expiry() < 86400]
        self.sms_per_phone_day = [i for i in limits if i.get_expiry() >= 86400]
        self.sms_platform_day = RateLimitItemPerDay(settings.sms_phone_platform_per_day)
        self.legal_zone = ZoneInfo(settings.legal_timezone)
        self.auth_failures: list[RateLimitItem] = list(parse_many(settings.auth_failure_limits))
        self.redis_prefix = settings.redis_prefix
        self._seen: dict[str, dict[str, float]] = {}
        self.sms_per_identity: list[RateLimitItem] = list(parse_many(settings.sms_identity_limits))
        self.failed_codes = RateLimitItemPerDay(settings.failed_codes_per_identity)
        self.client_default = settings.client_requests_per_minute
        #: client id -> (requests left in this process's lease, until when it may be used).
        self._client_leases: TTLCache[str, tuple[int, float]] = TTLCache(
            100_000, CLIENT_LEASE_SECONDS
        )
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
    # up (or probe) the SMS quota of a real person's phone. Short windows count per client, so
    # one client's sends never show in another's answers; the platform-wide daily cap protects
    # the phone's owner, and its refusal is the same as the client's own daily one: same code,
    # same detail, Retry-After the next midnight (never a time derived from another's send).
    def _day(self) -> tuple[str, int]:
        """Today in the legal time zone, and the seconds until it ends."""
        now = datetime.now(self.legal_zone)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
        left = midnight.replace(tzinfo=self.legal_zone) - now
        return now.date().isoformat(), max(1, math.ceil(left.total_seconds()))

    def _day_counters(
        self, mode: str, client_id: str, phone_bidx: str, today: str
    ) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        mine = [
            (i, ("sms-day", mode, client_id, phone_bidx, today)) for i in self.sms_per_phone_day
        ]
        return [*mine, (self.sms_platform_day, ("sms-all", mode, phone_bidx, today))]

    # Sends are also counted per person (identity id), across resends, phones and
    # verifications: a person cannot be made to receive codes without end by cycling them.
    async def check_sms(
        self, mode: str, client_id: str, phone_bidx: str, identity_id: str | None = None
    ) -> Refusal | None:
        """Would one more SMS from this client to this phone (and person) be allowed? (Counts
        nothing.)"""
        today, until_midnight = self._day()
        for item, ids in self._day_counters(mode, client_id, phone_bidx, today):
            if not await self.day_limiter.test(item, *ids):
                return Refusal(until_midnight)
        refusal = await self._first_refusal(self.sms_per_phone, "sms", mode, client_id, phone_bidx)
        if refusal is None and identity_id is not None:
            refusal = await self._first_refusal(
                self.sms_per_identity, "sms-identity", mode, identity_id
            )
        return refusal

    async def hit_sms(
        self, mode: str, client_id: str, phone_bidx: str, identity_id: str | None = None
    ) -> Refusal | None:
        """Count one SMS from this client to this phone (and person), or refuse it without
        counting."""
        refusal = await self.check_sms(mode, client_id, phone_bidx, identity_id)
        if refusal is not None:
            return refusal
        ids = ("sms", mode, client_id, phone_bidx)
        for item in self.sms_per_phone:
            if not await self.limiter.hit(item, *ids):
                return Refusal(await self._retry_after(item, *ids))
        for item in self.sms_per_identity if identity_id is not None else []:
            person = ("sms-identity", mode, identity_id or "")
            if not await self.limiter.hit(item, *person):
                return Refusal(await self._retry_after(item, *person))
        today, until_midnight = self._day()
        for item, day_ids in self._day_counters(mode, client_id, phone_bidx, today):
            if not await self.day_limiter.hit(item, *day_ids):
                return Refusal(until_midnight)
        return None

    # -- failed codes per identity ----------------------------------------------------------------
    # Counted per (client, person): one client's users failing codes must not lock the same
    # person out at another client.
    async def failed_codes_of(self, client_id: str, identity_id: str) -> int:
        """How many failed codes the person has in the window (one read, as ``test`` makes)."""
        item = self.failed_codes
        stats = await self.limiter.get_window_stats(item, "codes", client_id, identity_id)
        return item.amount - stats.remaining

    async def record_failed_code(self, client_id: str, identity_id: str) -> None:
        await self.limiter.hit(self.failed_codes, "codes", client_id, identity_id)

    async def reset_failed_codes(self, client_id: str, identity_id: str) -> None:
        await self.limiter.clear(self.failed_codes, "codes", client_id, identity_id)

    # -- requests per client ----------------------------------------------------------------------
    async def hit_client(self, client_id: str, per_minute: int) -> Refusal | None:
        """Count one request of ``client_id`` against its per-minute quota.

        Shared through Redis, a process takes the quota in batches of 1% (a **lease**: one
        Redis call per batch, not per request) and counts requests against its lease in
        memory; a quota under 200 a minute, or one with less than a batch left, is counted
        request by request. So the quota holds across processes, and a client may be refused
        (or admitted late) by at most 1% per process: units leased to a process are counted
        when leased and used within :data:`CLIENT_LEASE_SECONDS`."""
        quota = per_minute or self.client_default
        now = time.monotonic()
        left, until = self._client_leases.get(client_id, (0, now))
        if left > 0 and until > now:
            self._client_leases[client_id] = (left - 1, until)
            return None
        item = RateLimitItemPerMinute(quota)
        batch = quota // CLIENT_LEASE_FRACTION if self.redis is not None else 0
        if batch > 1 and await self.client_limiter.hit(item, "client", client_id, cost=batch):
            self._client_leases[client_id] = (batch - 1, now + CLIENT_LEASE_SECONDS)
            return None
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

    async def see_records(self, admin_id: str, record_ids: Iterable[str]) -> bool:
        """Count the distinct records ``admin_id`` is shown (each once per hour, by any path).
        False, counting nothing, when they would take the admin past the hourly cap."""
        ids = sorted(set(record_ids))
        if not ids:
            return True
        now, window, cap = time.time(), 3600.0, self.admin_records.amount
        if self.redis is not None:
            key = f"{self.redis_prefix}:records-seen/{admin_id}"
            script = self.redis.register_script(_SEE_RECORDS)
            return bool(await script(keys=[key], args=[now, window, cap, *ids]))
        seen = self._seen.setdefault(admin_id, {})
        for rid in [r for r, at in seen.items() if at <= now - window]:
            del seen[rid]
        new = [r for r in ids if r not in seen]
        if new and len(seen) + len(new) > cap:
            return False
        seen.update(dict.fromkeys(new, now))
        return True

    # -- failed authentications per address ------------------------------------------------------
    # Checked before any database read, counted on failure: a guesser is stopped by the limits'
    # storage (memory or Redis) alone, and the success path costs nothing more.
    async def auth_refused(self, address: str) -> Refusal | None:
        return await self._first_refusal(self.auth_failures, "auth-fail", address)

    async def record_auth_failure(self, address: str) -> None:
        for item in self.auth_failures:
            await self.limiter.hit(item, "auth-fail", address)

    async def reset(self) -> None:
        await self.storage.reset()
        self._seen.clear()
        self._client_leases.clear()

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
