"""Erasure (Cybersecurity Law Art. 43): remove everything personal, keep a PII-free tombstone.

Erasing one verification erases every verification the same client holds for the same person,
since the person asked the operator to delete their information: blind indexes, the argon2id
hash, masked values, the sealed copy, codes, sandbox messages, queued payloads and stored
idempotent answers; the client's events (and their undelivered webhooks) show
``[erased]`` for the user id. The person's identity row goes too unless another client still holds a
verification of them. Tokens are revoked. The person may then register again.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.hotcache import tokens_changed
from app.models import (
    AuditEvent,
    ClientIdentity,
    IdempotencyKey,
    Identity,
    OutboxJob,
    SandboxMessage,
    SmsCode,
    Status,
    Verification,
)
from app.models._types import utcnow
from app.services import events, lifecycle, tokens

#: What the tombstone (and the events) show instead of the client's user id.
ERASED_USER = events.ERASED_USER


@dataclass(frozen=True)
class Receipt:
    receipt_id: str
    erased_at: datetime
    audit_event_seq: int
    audit_event_hash: str
    verification_ids: list[str]


async def receipt_of(session: AsyncSession, verification: Verification) -> Receipt | None:
    """The receipt of an erased verification, read back from its audit event."""
    event = (
        await session.execute(
            select(AuditEvent)
            .where(
                AuditEvent.subject_id == verification.id, AuditEvent.action == "verification.erased"
            )
            .order_by(col(AuditEvent.seq).desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if event is None:
        return None
    data = json.loads(event.data)
    assert event.seq is not None  # a stored row
    return Receipt(
        data["receipt_id"],
        event.occurred_at,
        event.seq,
        event.hash,
        data.get("verification_ids", []),
    )


async def scrub(session: AsyncSession, verification: Verification) -> None:
    vid = verification.id
    await tokens.revoke_for_verification(session, vid, "erased")
    await events.redact_user(session, vid)
    await session.execute(delete(SmsCode).where(col(SmsCode.verification_id) == vid))
    await session.execute(delete(SandboxMessage).where(col(SandboxMessage.verification_id) == vid))
    await session.execute(
        update(OutboxJob)
        .where(col(OutboxJob.verification_id) == vid)
        .values(payload=None, done_at=utcnow())
    )
    await session.execute(delete(IdempotencyKey).where(col(IdempotencyKey.resource_id) == vid))
    await session.execute(
        update(Verification)
        .where(col(Verification.id) == vid)
        .values(
            # Integrators often use a phone or e-mail as their user id: keep none of it.
            external_user_id=ERASED_USER,
            identity_id=None,
            bidx_version=None,
            bidx_suite=None,
            name_bidx=None,
            phone_bidx=None,
            identity_hash=None,
            masked_name=None,
            masked_id_number=None,
            masked_phone=None,
            sealed_subject=None,
            review_notes_sealed=None,
            erased_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    await session.refresh(verification)


async def erase(
    session: AsyncSession,
    verification: Verification,
    *,
    actor_type: str,
    actor_id: str | None,
    reason_code: str | None = None,
) -> Receipt:
    """Erase the person behind ``verification`` for its client; idempotent.

    Covers every verification the client holds for the same person *or* the same user (an
    earlier attempt with a mistyped number is still that person's data).
    """
    await session.refresh(verification, with_for_update=True)  # racing erasures queue here
    if verification.status == Status.ERASED:
        # A retry (say, after a 503 from the first attempt) tells other processes again.
        tokens_changed(session)
        existing = await receipt_of(session, verification)
        assert existing is not None
        return existing
    identity_ids = {verification.identity_id} - {None}
    by_user = list(
        (
            await session.execute(
                select(Verification).where(
                    Verification.client_id == verification.client_id,
                    Verification.external_user_id == verification.external_user_id,
                )
            )
        ).scalars()
    )
    identity_ids |= {v.identity_id for v in by_user} - {None}
    by_person: list[Verification] = []
    if identity_ids:
        by_person = list(
            (
                await session.execute(
                    select(Verification).where(
                        Verification.client_id == verification.client_id,
                        col(Verification.identity_id).in_(identity_ids),
                    )
                )
            ).scalars()
        )
    siblings = [verification] + [
        v for v in {v.id: v for v in by_user + by_person}.values() if v.id != verification.id
    ]
    receipt_id = "rcpt_" + secrets.token_hex(12)
    ids = [v.id for v in siblings]
    events = []
    for v in siblings:
        await scrub(session, v)
        if v.status != Status.ERASED:
            events.append(
                await lifecycle.transition(
                    session,
                    v,
                    Status.ERASED,
                    expect=[s for s in Status if s != Status.ERASED],
                    reason="erasure_request",
                    actor_type=actor_type,
                    actor_id=actor_id,
                    data={
                        "receipt_id": receipt_id,
                        "verification_ids": ids,
                        **({"reason_code": reason_code} if reason_code else {}),
                    },
                )
            )
    for identity_id in identity_ids:
        await session.execute(
            delete(ClientIdentity).where(
                col(ClientIdentity.client_id) == verification.client_id,
                col(ClientIdentity.identity_id) == identity_id,
            )
        )
        still_used = (
            await session.execute(
                select(Verification.id).where(Verification.identity_id == identity_id).limit(1)
            )
        ).first()
        if still_used is None:
            await session.execute(
                delete(ClientIdentity).where(col(ClientIdentity.identity_id) == identity_id)
            )
            await session.execute(delete(Identity).where(col(Identity.id) == identity_id))
    first = events[0]
    assert first.seq is not None  # flushed
    return Receipt(receipt_id, first.occurred_at, first.seq, first.hash, ids)
