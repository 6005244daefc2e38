"""Clients and their API keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import instrumentation, make_transient_to_detached
from sqlmodel import col, select

from app.crypto import API_KEY_PREFIXES, generate_api_key, hash_api_key
from app.hotcache import ApiKeyStates
from app.models import ApiKey, Client
from app.models._types import utcnow
from app.services import audit

MODES = tuple(API_KEY_PREFIXES)


async def names(session: AsyncSession) -> dict[str, str]:
    """Every client's name by id (for tables that show clients)."""
    rows = await session.execute(select(Client.id, Client.name))
    return {client_id: name for client_id, name in rows.all()}


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
    return (await new_key(session, master_key, client))[1]


async def new_key(session: AsyncSession, master_key: bytes, client: Client) -> tuple[ApiKey, str]:
    """A new key of ``client``: its row and the plain key (returned once, stored as a hash)."""
    api_key = generate_api_key(client.mode)
    row = ApiKey(
        client_id=client.id,
        prefix=api_key[: len(API_KEY_PREFIXES[client.mode]) + 4],
        key_hash=hash_api_key(master_key, api_key),
    )
    session.add(row)
    await session.flush()
    return row, api_key


#: A key's last use is written at most this often per process (a write per request would
#: cost more than the request).
LAST_USE_EVERY = timedelta(minutes=5)


def _well_formed(api_key: str) -> bool:
    return api_key.startswith(tuple(API_KEY_PREFIXES.values())) and len(api_key) <= 128


async def authenticate(
    session: Callable[[], Awaitable[AsyncSession]],
    master_key: bytes,
    api_key: str,
    cache: ApiKeyStates | None = None,
    used: Callable[[str], None] | None = None,
    before_lookup: Callable[[], Awaitable[None]] | None = None,
) -> Client | None:
    """The active client owning ``api_key``, or None. One indexed lookup by keyed hash, reused
    from ``cache`` until a revoke, rotation or disable invalidates it in every process (see
    app.hotcache); ``session`` is asked for only on a miss. A rotated key works until its
    ``expires_at``. ``used`` is called with the key's id when the key is accepted (see
    :func:`note_use`). ``before_lookup`` is awaited before any database read (and for a
    malformed key): the guard that refuses an address that failed too often, at no cost to
    the database."""
    if not _well_formed(api_key):
        if before_lookup is not None:
            await before_lookup()
        return None
    key_hash = hash_api_key(master_key, api_key)
    now = utcnow()
    epoch = cache.epoch() if cache is not None else None
    cached = cache.get(key_hash, epoch) if cache is not None else None
    if cached is not None:
        if cached["expires_at"] is not None and cached["expires_at"] <= now:
            return None
        if used is not None:
            used(cached["key_id"])
        return _detached(cached["client"])
    if before_lookup is not None:
        await before_lookup()
    row = (
        await (await session()).execute(
            select(Client, ApiKey.id, ApiKey.revoked_at, ApiKey.expires_at)
            .join(ApiKey, col(ApiKey.client_id) == col(Client.id))
            .where(ApiKey.key_hash == key_hash)
        )
    ).first()
    if row is None:
        return None
    found: Client = row[0]
    key_id, revoked_at, expires_at = row[1], row[2], row[3]
    if revoked_at is not None or found.disabled or (expires_at is not None and expires_at <= now):
        return None
    # A key's prefix must agree with its client's mode: test keys only ever reach sandboxes.
    if not api_key.startswith(API_KEY_PREFIXES[found.mode]):
        return None
    if cache is not None:
        cache.put(
            key_hash,
            epoch,
            {"client": found.model_dump(), "key_id": key_id, "expires_at": expires_at},
        )
    if used is not None:
        used(key_id)
    return found


_CLIENT_CLASS = instrumentation.manager_of_class(Client)


def _detached(columns: dict[str, Any]) -> Client:
    """A detached copy of a cached client per request (requests never share one ORM
    instance), built without validating again what was read from the database and validated
    then: SQLAlchemy's own constructor for a mapped instance plus pydantic's instance fields
    (about 5 µs, against 45 µs for ``Client(**columns)``)."""
    client: Client = _CLIENT_CLASS.new_instance()
    object.__setattr__(client, "__pydantic_fields_set__", set(columns))
    object.__setattr__(client, "__pydantic_extra__", None)
    object.__setattr__(client, "__pydantic_private__", None)
    client.__dict__.update(columns)
    make_transient_to_detached(client)
    return client


async def note_use(session: AsyncSession, key_id: str) -> None:
    """Write that the key was used now, unless it was noted within :data:`LAST_USE_EVERY`
    (by any process: the update is guarded)."""
    now = utcnow()
    await session.execute(
        update(ApiKey)
        .where(col(ApiKey.id) == key_id)
        .where(
            or_(
                col(ApiKey.last_used_at).is_(None),
                col(ApiKey.last_used_at) < now - LAST_USE_EVERY,
            )
        )
        .values(last_used_at=now)
    )
