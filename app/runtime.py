"""What a running service holds: settings, database, keys, hashers and plug-ins.

Built once at start-up (``build_runtime``) and kept on ``app.state.runtime``; the CLI and the
worker build the same object, so every entry point runs the same configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.crypto import Argon2Pool, Argon2Profile, Suite
from app.db import create_engine, create_sessionmaker
from app.hotcache import (
    API_KEY_STATES,
    TOKEN_STATES,
    ApiKeyStates,
    ClaimsCache,
    Invalidations,
    TokenStates,
    TtlMap,
)
from app.identity import BlindIndexer
from app.ratelimit import RateLimits
from app.services.audit import AUDIT_KEYS
from app.services.clients import LAST_USE_EVERY
from app.services.events import WAKE_WORKER
from app.services.keys import KeyRing
from app.settings import Settings

if TYPE_CHECKING:
    from app.senders.registry import Senders
    from app.verifiers.registry import Verifiers
    from app.worker import Worker


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    blind: BlindIndexer
    identity_hasher: Argon2Pool
    password_hasher: Argon2Pool
    http_client: httpx.AsyncClient
    limits: RateLimits
    verifiers: Verifiers
    senders: Senders
    keyring: KeyRing
    token_states: TokenStates
    #: API key hash -> client columns; (client id, token) -> verified claims. See app.hotcache.
    api_keys: ApiKeyStates
    token_claims: ClaimsCache
    #: This process's subscription to pushed cache invalidations (app.hotcache).
    invalidations: Invalidations
    #: Published collection-rules versions (immutable once published).
    policies: TtlMap
    #: Webhook deliveries' own client: no proxies from the environment, no redirects.
    webhook_client: httpx.AsyncClient
    #: Keys whose last use this process wrote lately (app.services.clients.LAST_USE_EVERY).
    key_last_use: TtlMap
    worker: Worker | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def notify_worker(self) -> None:
        """Wake the in-process worker after a commit that queued a job (no-op without one)."""
        if self.worker is not None:
            self.worker.notify()

    @property
    def master_key(self) -> bytes:
        return self.settings.master_key

    @property
    def suite(self) -> Suite:
        """The crypto suite new personal-data values are made with (see ``app.crypto``)."""
        return self.settings.crypto_suite

    def start(self) -> None:
        """Begin what a serving process runs in the background (inside its event loop)."""
        self.invalidations.start()

    async def close(self) -> None:
        await self.invalidations.stop()
        self.identity_hasher.close()
        self.password_hasher.close()
        await self.http_client.aclose()
        await self.webhook_client.aclose()
        await self.limits.close()
        await self.engine.dispose()


def build_runtime(settings: Settings, *, engine: AsyncEngine | None = None) -> Runtime:
    engine = engine or create_engine(settings)
    profile = Argon2Profile(
        memory_kib=settings.identity_hash_memory_kib,
        time_cost=settings.identity_hash_time_cost,
        parallelism=settings.identity_hash_parallelism,
    )
    from app.senders.registry import build_senders
    from app.verifiers.registry import build_verifiers

    limits = RateLimits(settings)
    invalidations = Invalidations(limits.redis, settings.redis_prefix)
    token_states = TokenStates(invalidations, settings.token_cache_seconds)
    api_keys = ApiKeyStates(invalidations, settings.api_key_cache_seconds)
    sessions = create_sessionmaker(
        engine,
        info={
            TOKEN_STATES: token_states,
            API_KEY_STATES: api_keys,
            AUDIT_KEYS: settings.audit_chain_keys,
        },
    )
    http_client = httpx.AsyncClient(
        timeout=httpx.Timeout(5.0, connect=2.0),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        follow_redirects=False,
    )
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        blind=BlindIndexer(settings.blind_keys, settings.blind_key_version, settings.crypto_suite),
        identity_hasher=Argon2Pool(profile, settings.hash_workers),
        password_hasher=Argon2Pool(
            Argon2Profile(
                memory_kib=settings.password_hash_memory_kib,
                time_cost=settings.password_hash_time_cost,
                parallelism=settings.password_hash_parallelism,
            ),
            settings.hash_workers,
        ),
        http_client=http_client,
        limits=limits,
        verifiers=build_verifiers(settings, http_client),
        senders=build_senders(settings, http_client, sessions),
        keyring=KeyRing(settings.master_key),
        token_states=token_states,
        api_keys=api_keys,
        token_claims=ClaimsCache(enabled=settings.token_cache_seconds > 0),
        invalidations=invalidations,
        policies=TtlMap("policy", 3600),
        webhook_client=httpx.AsyncClient(
            timeout=httpx.Timeout(settings.webhook_timeout_seconds, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
            trust_env=False,
        ),
        key_last_use=TtlMap("api_key_last_use", LAST_USE_EVERY.total_seconds(), maxsize=100_000),
    )

    async def wake_worker() -> None:
        runtime.notify_worker()

    # Events queue deliveries deep inside services: their commit wakes the worker this way.
    sessions.kw["info"][WAKE_WORKER] = wake_worker
    return runtime
