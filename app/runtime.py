"""Builds what a running service holds (:class:`~app.services.runtime.Runtime`): settings,
database, keys, hashers and plug-ins.

A composition root: built once at start-up (``build_runtime``) and kept on
``app.state.runtime``; the CLI and the worker build the same object, so every entry point runs
the same configuration.
"""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admission import Gate
from app.crypto import Argon2Pool, Argon2Profile
from app.db import create_engine, create_sessionmaker
from app.hotcache import (
    API_KEY_STATES,
    ENDPOINT_STATES,
    MEASURE_STATES,
    TOKEN_STATES,
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
from app.senders.registry import build_senders
from app.services.audit import AUDIT_CHAINS, AUDIT_KEYS, Chains
from app.services.clients import LAST_USE_EVERY
from app.services.keys import KeyRing
from app.services.outbox import WAKE_WORKER
from app.services.policies import POLICY_REFS
from app.services.runtime import Runtime
from app.settings import Settings
from app.verifiers.registry import build_verifiers

__all__ = ["Runtime", "build_runtime"]


#: How long a process keeps the emergency measures in force and each client's webhook endpoints
#: (every change drops them at once, everywhere).
MEASURE_CACHE_SECONDS = 60.0


def build_runtime(settings: Settings, *, engine: AsyncEngine | None = None) -> Runtime:
    engine = engine or create_engine(settings)
    profile = Argon2Profile(
        memory_kib=settings.identity_hash_memory_kib,
        time_cost=settings.identity_hash_time_cost,
        parallelism=settings.identity_hash_parallelism,
    )
    # A token-path process (``serve_role=tokens``) never hashes: one thread at most, never started.
    hash_workers = settings.hash_workers if settings.serve_role == "all" else 1
    limits = RateLimits(settings)
    invalidations = Invalidations(limits.redis, settings.redis_prefix)
    token_states = TokenStates(invalidations, settings.token_cache_seconds)
    api_keys = ApiKeyStates(invalidations, settings.api_key_cache_seconds)
    measures = MeasureStates(invalidations, MEASURE_CACHE_SECONDS)
    endpoints = EndpointStates(invalidations, MEASURE_CACHE_SECONDS)
    policies = TtlMap("policy", 3600)
    sessions = create_sessionmaker(
        engine,
        info={
            POLICY_REFS: policies,
            TOKEN_STATES: token_states,
            API_KEY_STATES: api_keys,
            MEASURE_STATES: measures,
            ENDPOINT_STATES: endpoints,
            AUDIT_KEYS: settings.audit_chain_keys,
            AUDIT_CHAINS: Chains(settings.audit_chains),
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
        identity_hasher=Argon2Pool(profile, hash_workers),
        password_hasher=Argon2Pool(
            Argon2Profile(
                memory_kib=settings.password_hash_memory_kib,
                time_cost=settings.password_hash_time_cost,
                parallelism=settings.password_hash_parallelism,
            ),
            hash_workers,
        ),
        http_client=http_client,
        limits=limits,
        verifiers=build_verifiers(settings, http_client),
        senders=build_senders(settings, http_client, sessions),
        keyring=KeyRing(settings.master_key),
        token_states=token_states,
        api_keys=api_keys,
        measures=measures,
        endpoints=endpoints,
        token_claims=ClaimsCache(enabled=settings.token_cache_seconds > 0),
        invalidations=invalidations,
        policies=policies,
        webhook_client=httpx.AsyncClient(
            timeout=httpx.Timeout(settings.webhook_timeout_seconds, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
            trust_env=False,
        ),
        key_last_use=TtlMap("api_key_last_use", LAST_USE_EVERY.total_seconds(), maxsize=100_000),
        registrations=Gate("registration", settings.registration_in_flight_limit),
    )

    async def wake_worker() -> None:
        runtime.notify_worker()

    # Jobs are queued deep inside services: their commit wakes the worker this way.
    sessions.kw["info"][WAKE_WORKER] = wake_worker
    return runtime
