"""Clients and their API keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import col, select

from app.crypto import API_KEY_PREFIXES, generate_api_key, hash_api_key
from app.hotcache import TtlMap
from app.models import ApiKey, Client
from app.services import audit

MODES = tuple(API_KEY_PREFIXES)


async def create_client(
    session: AsyncSession,
    master_key: bytes,
    *,
    name: str,
    mode: str,
    default_level: str = "L2",
    actor_id: str | None = None,
) -> tuple[Client, str]:
    """Create a client with one API key. The key is returned once and stored only as a hash."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    client = Client(name=name, mode=mode, default_level=default_level)
    session.add(client)
    await session.flush()
    api_key = await issue_key(session, master_key, client)
    await audit.record(
        session,
        action="client.created",
        subject_type="client",
        subject_id=client.id,
        actor_type="admin" if actor_id else "system",
        actor_id=actor_id,
        data={"mode": mode},
    )
    return client, api_key


async def issue_key(session: AsyncSession, master_key: bytes, client: Client) -> str:
    api_key = generate_api_key(client.mode)
    session.add(
        ApiKey(
            client_id=client.id,
            prefix=api_key[: len(API_KEY_PREFIXES[client.mode]) + 4],
            key_hash=hash_api_key(master_key, api_key),
        )
    )
    await session.flush()
    return api_key


def _well_formed(api_key: str) -> bool:
    return api_key.startswith(tuple(API_KEY_PREFIXES.values())) and len(api_key) <= 128


def cached(master_key: bytes, api_key: str, cache: TtlMap | None) -> Client | None:
    """The client of ``api_key`` if this process looked it up moments ago (no I/O at all)."""
    if cache is None or not _well_formed(api_key):
        return None
    found: dict[str, Any] | None = cache.get(hash_api_key(master_key, api_key))
    if found is None:
        return None
    # A detached copy per request: requests never share one ORM instance.
    client = Client(**found)
    make_transient_to_detached(client)
    return client


async def authenticate(
    session: AsyncSession, master_key: bytes, api_key: str, cache: TtlMap | None = None
) -> Client | None:
    """The active client owning ``api_key``, or None. One indexed lookup by keyed hash, reused
    from ``cache`` (hash -> the client's columns) for a few seconds when one is given."""
    if not _well_formed(api_key):
        return None
    hit = cached(master_key, api_key, cache)
    if hit is not None:
        return hit
    key_hash = hash_api_key(master_key, api_key)
    row = (
        await session.execute(
            select(Client, ApiKey.revoked_at)
            .join(ApiKey, col(ApiKey.client_id) == col(Client.id))
            .where(ApiKey.key_hash == key_hash)
        )
    ).first()
    if row is None:
        return None
    found: Client = row[0]
    revoked_at = row[1]
    if revoked_at is not None or found.disabled:
        return None
    # A key's prefix must agree with its client's mode: test keys only ever reach sandboxes.
    if not api_key.startswith(API_KEY_PREFIXES[found.mode]):
        return None
    if cache is not None:
        cache.put(key_hash, found.model_dump())
    return found
