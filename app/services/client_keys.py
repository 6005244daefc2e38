"""The lifecycle of clients and their API keys: list, disable and enable a client, add a key,
revoke one, rotate one with an overlap window.

Every change is one transaction with its audit event (who, and a reason code from
:data:`REASON_CODES`), and every change that can stop a key invalidates every process's cached
keys after the commit (``app.hotcache.api_keys_changed``), so every process refuses the key on
its next request. Plain keys are returned once, by :func:`add_key` and :func:`rotate_key`; only
their keyed hashes are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.errors import ProblemError
from app.hotcache import api_keys_changed
from app.models import ApiKey, Client
from app.models._types import utcnow
from app.schemas.client_keys import REASON_CODES as REASON_CODES  # re-exported for callers
from app.services import audit
from app.services.clients import new_key


@dataclass(frozen=True)
class Actor:
    """Who acts: an admin (``admin``, their id) or an operator at the command line
    (``operator``, ``os:<login>``)."""

    type: str
    id: str | None


@dataclass(frozen=True)
class ClientWithKeys:
    client: Client
    keys: list[ApiKey]


def key_state(key: ApiKey, now: datetime | None = None) -> str:
    """``active``, ``expiring`` (rotated, still in its overlap window), ``expired`` or
    ``revoked``."""
    moment = now or utcnow()
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None:
        return "expiring" if key.expires_at > moment else "expired"
    return "active"


def usable(key: ApiKey, now: datetime | None = None) -> bool:
    return key_state(key, now) in ("active", "expiring")


async def list_clients(session: AsyncSession) -> list[ClientWithKeys]:
    """Every client, newest first, with its keys (newest first)."""
    found = list(
        (await session.execute(select(Client).order_by(col(Client.created_at).desc()))).scalars()
    )
    keys = (await session.execute(select(ApiKey).order_by(col(ApiKey.created_at).desc()))).scalars()
    by_client: dict[str, list[ApiKey]] = {c.id: [] for c in found}
    for key in keys:
        by_client.setdefault(key.client_id, []).append(key)
    return [ClientWithKeys(c, by_client[c.id]) for c in found]


async def get_client(session: AsyncSession, client_id: str) -> ClientWithKeys:
    client = await session.get(Client, client_id)
    if client is None:
        raise ProblemError("not_found", "There is no such client")
    keys = (
        await session.execute(
            select(ApiKey)
            .where(col(ApiKey.client_id) == client_id)
            .order_by(col(ApiKey.created_at).desc())
        )
    ).scalars()
    return ClientWithKeys(client, list(keys))


def _check_reason(reason_code: str) -> None:
    if reason_code not in REASON_CODES:
        raise ProblemError(
            "invalid_reason_code", f"reason_code must be one of: {', '.join(REASON_CODES)}"
        )


async def set_disabled(
    session: AsyncSession, client_id: str, *, disabled: bool, actor: Actor, reason_code: str
) -> Client:
    """Disable (every key stops at once, everywhere) or enable a client."""
    _check_reason(reason_code)
    client = await session.get(Client, client_id, with_for_update=True)
    if client is None:
        raise ProblemError("not_found", "There is no such client")
    client.disabled = disabled
    session.add(client)
    await audit.record(
        session,
        action="client.disabled" if disabled else "client.enabled",
        subject_type="client",
        subject_id=client.id,
        actor_type=actor.type,
        actor_id=actor.id,
        data={"reason_code": reason_code},
    )
    await session.flush()
    api_keys_changed(session)
    return client


async def add_key(
    session: AsyncSession, master_key: bytes, client_id: str, *, actor: Actor, reason_code: str
) -> tuple[ApiKey, str]:
    """A further key for a client (to hand to a second deployment, or to roll keys by hand).
    The plain key is returned once."""
    _check_reason(reason_code)
    client = await session.get(Client, client_id)
    if client is None:
        raise ProblemError("not_found", "There is no such client")
    key, plain = await new_key(session, master_key, client)
    await audit.record(
        session,
        action="api_key.created",
        subject_type="api_key",
        subject_id=key.id,
        actor_type=actor.type,
        actor_id=actor.id,
        data={"client_id": client_id, "prefix": key.prefix, "reason_code": reason_code},
    )
    return key, plain


async def _usable_key(session: AsyncSession, key_id: str, client_id: str | None) -> ApiKey:
    key = await session.get(ApiKey, key_id, with_for_update=True)
    if key is None or (client_id is not None and key.client_id != client_id):
        raise ProblemError("not_found", "There is no such API key")
    if not usable(key):
        raise ProblemError("api_key_not_active", "This API key is already revoked or expired")
    return key


async def _usable_count(session: AsyncSession, client_id: str) -> int:
    now = utcnow()
    keys = (await session.execute(select(ApiKey).where(col(ApiKey.client_id) == client_id))).all()
    return sum(1 for (key,) in keys if usable(key, now))


@dataclass(frozen=True)
class Revoked:
    key: ApiKey
    #: Keys of the client that still work; 0 means the client has stopped.
    usable_keys_left: int


async def revoke_key(
    session: AsyncSession,
    key_id: str,
    *,
    actor: Actor,
    reason_code: str,
    client_id: str | None = None,
) -> Revoked:
    """Revoke a key now, in every process. Revoking a client's last key is allowed: the
    client then stops (``usable_keys_left == 0``)."""
    _check_reason(reason_code)
    key = await _usable_key(session, key_id, client_id)
    key.revoked_at = utcnow()
    session.add(key)
    await session.flush()
    left = await _usable_count(session, key.client_id)
    await audit.record(
        session,
        action="api_key.revoked",
        subject_type="api_key",
        subject_id=key.id,
        actor_type=actor.type,
        actor_id=actor.id,
        data={
            "client_id": key.client_id,
            "prefix": key.prefix,
            "reason_code": reason_code,
            "usable_keys_left": left,
        },
    )
    api_keys_changed(session)
    return Revoked(key, left)


@dataclass(frozen=True)
class Rotated:
    previous: ApiKey
    key: ApiKey
    plain: str


async def rotate_key(
    session: AsyncSession,
    master_key: bytes,
    key_id: str,
    *,
    overlap_hours: int,
    actor: Actor,
    reason_code: str,
    client_id: str | None = None,
) -> Rotated:
    """A new key for the same client; the old one keeps working for ``overlap_hours`` (0: it
    stops now), then stops in every process without anyone acting."""
    _check_reason(reason_code)
    if not 0 <= overlap_hours <= 24 * 30:
        raise ProblemError("invalid_request", "overlap_hours must be between 0 and 720")
    previous = await _usable_key(session, key_id, client_id)
    client = await session.get(Client, previous.client_id)
    assert client is not None  # a foreign key
    now = utcnow()
    ends = now + timedelta(hours=overlap_hours)
    # A key already expiring sooner keeps its earlier end.
    if previous.expires_at is None or previous.expires_at > ends:
        previous.expires_at = ends
    session.add(previous)
    key, plain = await new_key(session, master_key, client)
    await audit.record(
        session,
        action="api_key.rotated",
        subject_type="api_key",
        subject_id=previous.id,
        actor_type=actor.type,
        actor_id=actor.id,
        data={
            "client_id": client.id,
            "prefix": previous.prefix,
            "new_key_id": key.id,
            "new_prefix": key.prefix,
            "overlap_hours": overlap_hours,
            "reason_code": reason_code,
        },
    )
    api_keys_changed(session)
    return Rotated(previous, key, plain)
