"""Housekeeping (`realname purge`): data minimisation without touching the audit trail.

- Unfinished verifications (pending, awaiting_code) older than ``purge_unfinished_after_days``
  (default 7) become ``expired`` and lose everything personal, as in an erasure.
- Expired one-time codes, sandbox messages, idempotency records, admin sessions and tokens go,
  and events older than ``event_retention_days`` (30) with their webhook deliveries.
- Audit events are never removed here: they are kept at least ``audit_retention_days`` (≥ 180,
  Cybersecurity Law Art. 21).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.models import (
    AdminSession,
    ClientIdentity,
    Event,
    IdempotencyKey,
    Identity,
    OutboxJob,
    SandboxMessage,
    ServiceToken,
    SmsCode,
    Status,
    Verification,
    WebhookAttempt,
    WebhookDelivery,
)
from app.models._types import utcnow
from app.services import erasure, lifecycle
from app.settings import Settings

UNFINISHED = (Status.PENDING, Status.AWAITING_CODE)


async def run(
    session: AsyncSession, settings: Settings, *, dry_run: bool = False
) -> dict[str, int]:
    now = utcnow()
    cutoff = now - timedelta(days=settings.purge_unfinished_after_days)
    stale = list(
        (
            await session.execute(
                select(Verification).where(
                    col(Verification.status).in_([s.value for s in UNFINISHED]),
                    col(Verification.created_at) < cutoff,
                )
            )
        ).scalars()
    )
    counts = {"unfinished_expired": len(stale)}
    if dry_run:
        return counts
    orphan_candidates = {v.identity_id for v in stale if v.identity_id}
    for v in stale:
        await erasure.scrub(session, v)
        await lifecycle.transition(
            session,
            v,
            Status.EXPIRED,
            expect=UNFINISHED,
            reason="purged_unfinished",
            data={"after_days": settings.purge_unfinished_after_days},
        )
    for identity_id in orphan_candidates:
        used = (
            await session.execute(
                select(Verification.id).where(Verification.identity_id == identity_id).limit(1)
            )
        ).first()
        if used is None:
            await session.execute(
                delete(ClientIdentity).where(col(ClientIdentity.identity_id) == identity_id)
            )
            await session.execute(delete(Identity).where(col(Identity.id) == identity_id))
    # Cases left in review keep a sealed copy (for an approval that resumes with a code) only
    # for the purge period.
    stale_review = await session.execute(
        update(Verification)
        .where(
            col(Verification.status) == Status.NEEDS_REVIEW.value,
            col(Verification.created_at) < cutoff,
            col(Verification.sealed_subject).is_not(None),
        )
        .values(sealed_subject=None)
    )
    counts["review_sealed_copies_wiped"] = int(stale_review.rowcount)  # type: ignore[attr-defined]
    old_events = select(Event.id).where(
        col(Event.created_at) < now - timedelta(days=settings.event_retention_days)
    )
    deletions = {
        "expired_codes": delete(SmsCode).where(col(SmsCode.expires_at) < now - timedelta(hours=1)),
        "sandbox_messages": delete(SandboxMessage).where(col(SandboxMessage.expires_at) < now),
        "idempotency_keys": delete(IdempotencyKey).where(
            col(IdempotencyKey.created_at)
            < now - timedelta(seconds=settings.idempotency_ttl_seconds)
        ),
        "done_jobs": delete(OutboxJob).where(col(OutboxJob.done_at) < now - timedelta(days=7)),
        "admin_sessions": delete(AdminSession).where(col(AdminSession.expires_at) < now),
        "expired_tokens": delete(ServiceToken).where(
            col(ServiceToken.expires_at) < now - timedelta(days=1)
        ),
        # Deliveries and their attempts go with their event (foreign keys: children first).
        "webhook_attempts": delete(WebhookAttempt).where(
            col(WebhookAttempt.delivery_id).in_(
                select(WebhookDelivery.id).where(col(WebhookDelivery.event_id).in_(old_events))
            )
        ),
        "webhook_deliveries": delete(WebhookDelivery).where(
            col(WebhookDelivery.event_id).in_(old_events)
        ),
        "events": delete(Event).where(
            col(Event.created_at) < now - timedelta(days=settings.event_retention_days)
        ),
    }
    for name, statement in deletions.items():
        result = await session.execute(statement)
        counts[name] = int(result.rowcount)  # type: ignore[attr-defined]
    return counts
