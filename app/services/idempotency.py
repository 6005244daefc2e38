"""Idempotency-Key handling for POSTs (kept 24 h, per client).

Same key + same request replays the stored answer; same key + another request is
``idempotency_conflict``. The claim is a row inserted in the same transaction as the work, so
concurrent retries resolve on the unique constraint: the loser waits for the winner's commit
(PostgreSQL) or queues behind it (SQLite) and then replays its answer.

Stored answers are sealed (AES-GCM under a purpose key, bound to client and key): a replayed token
issue returns the same access token, which must not sit readable in the database.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.crypto import keyed_hash, seal, unseal
from app.errors import ProblemError
from app.models import IdempotencyKey
from app.models._types import utcnow

_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
#: The rule of a valid key, for the OpenAPI document.
KEY_PATTERN = "^[\\x21-\\x7e]{1,255}$"
_SEAL = "idempotency-answer/v1"


@dataclass(frozen=True)
class Stored:
    status_code: int
    body: Any


def fingerprint(master_key: bytes, method: str, path: str, canonical_body: Any) -> str:
    """Keyed hash of the request: it can be compared, but reveals nothing of the body."""
    data = json.dumps(
        [method, path, canonical_body], sort_keys=True, ensure_ascii=False, default=str
    )
    return keyed_hash(master_key, "idempotency", data.encode())


def check_key(key: str) -> str:
    if not _VALID_KEY.match(key):
        raise ProblemError(
            "invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters"
        )
    return key


def _aad(row: IdempotencyKey) -> bytes:
    return f"{row.client_id}:{row.key}".encode()


def _answer(master_key: bytes | None, row: IdempotencyKey, stored: str) -> Any:
    if master_key is None or stored.startswith(("{", "[")):  # written before answers were sealed
        return json.loads(stored)
    return json.loads(unseal(master_key, _SEAL, stored, _aad(row)))


async def _existing(
    session: AsyncSession,
    client_id: str,
    key: str,
    request_hash: str,
    ttl: timedelta,
    master_key: bytes | None = None,
) -> Stored | None:
    row = (
        await session.execute(
            select(IdempotencyKey).where(
                IdempotencyKey.client_id == client_id, IdempotencyKey.key == key
            )
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    if row.created_at < utcnow() - ttl:
        await session.execute(delete(IdempotencyKey).where(col(IdempotencyKey.id) == row.id))
        await session.flush()
        return None
    if row.request_hash != request_hash:
        raise ProblemError(
            "idempotency_conflict", "This Idempotency-Key was already used with a different request"
        )
    if row.status_code is None or row.response_body is None:
        raise ProblemError("idempotency_in_progress", headers={"Retry-After": "1"})
    return Stored(row.status_code, _answer(master_key, row, row.response_body))


async def lookup(
    session: AsyncSession,
    client_id: str,
    key: str,
    request_hash: str,
    ttl: timedelta,
    master_key: bytes | None = None,
) -> Stored | None:
    """A stored answer to replay, or None when the key is new (or expired)."""
    return await _existing(session, client_id, key, request_hash, ttl, master_key)


async def claim(
    session: AsyncSession,
    client_id: str,
    key: str,
    request_hash: str,
    ttl: timedelta,
    master_key: bytes | None = None,
) -> tuple[IdempotencyKey | None, Stored | None]:
    """Claim ``key`` for this request: (row, None) to go ahead, or (None, stored) to replay."""
    row = IdempotencyKey(client_id=client_id, key=key, request_hash=request_hash)
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        stored = await _existing(session, client_id, key, request_hash, ttl, master_key)
        if stored is None:  # pragma: no cover - the winner rolled back between our two statements
            raise ProblemError("idempotency_in_progress", headers={"Retry-After": "1"}) from None
        return None, stored
    return row, None


async def complete(
    session: AsyncSession,
    row: IdempotencyKey,
    status_code: int,
    body: Any,
    *,
    resource_id: str | None = None,
    master_key: bytes | None = None,
) -> None:
    """Store the answer to replay; sealed when ``master_key`` is given."""
    text = json.dumps(body, ensure_ascii=False, default=str)
    row.resource_id = resource_id
    row.status_code = status_code
    row.response_body = (
        text if master_key is None else seal(master_key, _SEAL, text.encode(), _aad(row))
    )
    await session.flush()
