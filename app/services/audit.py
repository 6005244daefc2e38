"""The audit trail: append-only, hash-chained, PII-free.

Every writer locks the chain head (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite serialises
writers with ``BEGIN IMMEDIATE``), so events form one gap-free chain in commit order. The lock
is held only for the short tail of a transaction: slow work (hashing, provider calls) happens
before any audit event is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.logging import request_id_var
from app.models import AuditEvent, AuditHead
from app.models._types import utcnow

GENESIS = "0" * 64

#: Keys that may never appear in an audit event's data (defence in depth: callers pass ids and
#: codes only).
_FORBIDDEN_KEYS = frozenset({"real_name", "id_number", "phone", "code", "name", "password"})


def _canonical(event: AuditEvent, data: Mapping[str, Any]) -> bytes:
    return json.dumps(
        {
            "seq": event.seq,
            "occurred_at": event.occurred_at.isoformat(),
            "actor_type": event.actor_type,
            "actor_id": event.actor_id,
            "action": event.action,
            "subject_type": event.subject_type,
            "subject_id": event.subject_id,
            "data": data,
            "request_id": event.request_id,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode()


def compute_hash(prev_hash: str, event: AuditEvent) -> str:
    data = json.loads(event.data)
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(event, data)).hexdigest()


async def record(
    session: AsyncSession,
    *,
    action: str,
    subject_type: str,
    subject_id: str | None,
    actor_type: str,
    actor_id: str | None,
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction."""
    payload = dict(data or {})
    if leaked := _FORBIDDEN_KEYS.intersection(payload):
        raise ValueError(f"audit data may not carry personal fields: {sorted(leaked)}")
    locked = select(AuditHead).where(AuditHead.id == 1).with_for_update()
    head = (await session.execute(locked)).scalar_one_or_none()
    if head is None:
        # The migration seeds the head; if it was removed, recreate it without racing.
        await session.execute(
            text(
                "INSERT INTO audit_head (id, seq, hash) SELECT 1, 0, :genesis "
                "WHERE NOT EXISTS (SELECT 1 FROM audit_head WHERE id = 1)"
            ),
            {"genesis": GENESIS},
        )
        head = (await session.execute(locked)).scalar_one()
    event = AuditEvent(
        seq=head.seq + 1,
        occurred_at=utcnow(),
        actor_type=actor_type,
        actor_id=actor_id,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        data=json.dumps(payload, sort_keys=True, separators=(",", ":")),
        request_id=request_id_var.get(),
        prev_hash=head.hash,
        hash="",
    )
    event.hash = compute_hash(head.hash, event)
    head.seq, head.hash = event.seq, event.hash
    session.add(event)
    await session.flush()
    return event


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    problem: str | None = None


async def verify_chain(session: AsyncSession, *, batch: int = 5000) -> ChainReport:
    """Recompute every link; report the first event whose hash or link does not hold."""
    prev = GENESIS
    expected_seq = 1
    checked = 0
    last_seq = 0
    while True:
        rows = (
            (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.seq > last_seq)
                    .order_by(col(AuditEvent.seq))
                    .limit(batch)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            break
        for event in rows:
            if event.seq != expected_seq:
                return ChainReport(False, checked, expected_seq, "event missing from the chain")
            if event.prev_hash != prev:
                return ChainReport(False, checked, event.seq, "link to the previous event broken")
            if compute_hash(prev, event) != event.hash:
                return ChainReport(
                    False, checked, event.seq, "event content does not match its hash"
                )
            prev = event.hash
            expected_seq += 1
            checked += 1
            last_seq = event.seq
    head = await session.get(AuditHead, 1)
    if head is not None and (head.seq != last_seq or head.hash != prev):
        return ChainReport(False, checked, last_seq + 1, "events after the last one were removed")
    return ChainReport(True, checked)
