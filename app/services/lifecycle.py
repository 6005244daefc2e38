"""Guarded state transitions of a verification, each with its audit event and its event.

A transition is an ``UPDATE … WHERE status IN (expected)``: when two actors race (a worker and
a code check, two processes), exactly one wins and the other sees :class:`StaleState`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app import metrics
from app.errors import StaleState as StaleState  # re-exported: callers catch lifecycle.StaleState
from app.hotcache import tokens_changed
from app.models import AuditEvent, Status, Verification
from app.models._types import utcnow
from app.services import audit, events, tokens
from app.settings import Settings

#: States in which the sealed subject is still needed (checks running, codes being sent, a
#: reviewer's approval that resumes the flow with a code). `realname purge` wipes it from
#: verifications left in review longer than the purge period.
NEEDS_SUBJECT = frozenset({Status.PENDING, Status.AWAITING_CODE, Status.NEEDS_REVIEW})


def verified_until(settings: Settings) -> datetime:
    return utcnow() + timedelta(days=settings.verified_validity_days)


async def transition(
    session: AsyncSession,
    verification: Verification,
    to: Status,
    *,
    expect: Iterable[Status],
    reason: str | None = None,
    actor_type: str = "system",
    actor_id: str | None = None,
    data: dict[str, Any] | None = None,
    valid_until: datetime | None = None,
) -> AuditEvent:
    """Move ``verification`` to ``to`` if it is in one of ``expect``; audit it and emit its
    ``verification.<status>`` event in the same transaction, and return the audit event.

    Side effects that belong to every such move happen here, once:
    - leaving the states that need the sealed subject wipes it;
    - leaving ``verified`` revokes the verification's tokens at once;
    - reaching ``verified`` sets how long it holds (``valid_until``) and retires the
      verification it corrects, if any.
    """
    expected = [s.value for s in expect]
    values: dict[str, Any] = {"status": to.value, "status_reason": reason, "updated_at": utcnow()}
    if to not in NEEDS_SUBJECT:
        values["sealed_subject"] = None
    if to == Status.VERIFIED and valid_until is not None:
        values["expires_at"] = valid_until
    result = await session.execute(
        update(Verification)
        .where(col(Verification.id) == verification.id, col(Verification.status).in_(expected))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleState(verification.id)
    metrics.TRANSITIONS.labels(to.value).inc()
    previous = verification.status
    if Status.VERIFIED in expect and to != Status.VERIFIED:
        # The status is part of what introspection caches: tell other processes after commit
        # whatever the in-memory ``previous`` says.
        tokens_changed(session)
    for key, value in values.items():
        setattr(verification, key, value)
    event = await audit.record(
        session,
        action=f"verification.{to.value}",
        subject_type="verification",
        subject_id=verification.id,
        actor_type=actor_type,
        actor_id=actor_id,
        data={"from": previous, "reason": reason, **(data or {})},
    )
    if to in events.ANNOUNCED_STATUSES:
        await events.emit(
            session,
            client_id=verification.client_id,
            type=f"verification.{to.value}",
            verification=verification,
            reason=reason,
        )
    if previous == Status.VERIFIED and to != Status.VERIFIED:
        await tokens.revoke_for_verification(session, verification.id, reason or to.value)
    if to == Status.VERIFIED:
        # One verified verification per user: the one that just passed retires the others.
        corrected = (
            await session.execute(
                select(Verification).where(
                    Verification.client_id == verification.client_id,
                    Verification.external_user_id == verification.external_user_id,
                    Verification.status == Status.VERIFIED,
                    Verification.id != verification.id,
                )
            )
        ).scalars()
        for old in list(corrected):
            await transition(
                session,
                old,
                Status.REVOKED,
                expect=[Status.VERIFIED],
                reason="corrected",
                data={"corrected_by": verification.id},
            )
    return event


async def expire_due(session: AsyncSession, *, limit: int = 200) -> int:
    """Move unfinished verifications past their ``expires_at`` to ``expired`` (wiping the sealed
    copy). Run by the worker; each move is guarded, so racing workers cannot double it."""
    due = (
        await session.execute(
            select(Verification)
            .where(
                col(Verification.status).in_([Status.PENDING.value, Status.AWAITING_CODE.value]),
                col(Verification.expires_at) < utcnow(),
            )
            .limit(limit)
        )
    ).scalars()
    moved = 0
    for verification in list(due):
        try:
            await transition(
                session,
                verification,
                Status.EXPIRED,
                expect=[Status.PENDING, Status.AWAITING_CODE],
                reason="verification_expired",
            )
            moved += 1
        except StaleState:
            continue
    return moved
