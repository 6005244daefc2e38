"""What a running service holds: settings, database, keys, hashers and plug-ins.

The services take a :class:`Runtime` and read what they need from it. It is built once per
process by :func:`app.runtime.build_runtime` (the composition root: the API, the CLI and the
worker build the same object, so every entry point runs the same configuration); it lives here,
below the services that use it, so that nothing under the entry points imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.admission import Gate
from app.crypto import Argon2Pool, Suite
from app.hotcache import (
    ApiKeyStates,
    ClaimsCache,
    EndpointStates,
    Invalidations,
    MeasureStates,
    TokenStates,
    TtlMap,
)
from app.identity import BlindIndexer
from app.ratelimit import RateLimits
from app.senders.registry import Senders
from app.services.keys import KeyRing
from app.settings import Settings
from app.verifiers.registry import Verifiers

__all__ = ["Runtime", "WorkerHandle"]


class WorkerHandle(Protocol):
    """What the services may ask of the in-process worker (``app.worker.Worker``)."""

    def notify(self) -> None:
        """Wake it: a commit queued a job."""


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
    #: The emergency measures in force (kind, scope), dropped everywhere by every action.
    measures: MeasureStates
    #: Each client's mode and enabled webhook endpoints, dropped everywhere by every change.
    endpoints: EndpointStates
    #: Published collection-rules versions (immutable once published).
    policies: TtlMap
    #: Webhook deliveries' own client: no proxies from the environment, no redirects.
    webhook_client: httpx.AsyncClient
    #: Keys whose last use this process wrote lately (app.services.clients.LAST_USE_EVERY).
    key_last_use: TtlMap
    #: This process's subscription to pushed cache invalidations (app.hotcache).
    invalidations: Invalidations
    #: Admission control of registrations in this process (REALNAME_REGISTRATION_MAX_IN_FLIGHT).
    registrations: Gate
    #: The in-process outbox worker, when this process runs one (set by its entry point).
    worker: WorkerHandle | None = None

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
