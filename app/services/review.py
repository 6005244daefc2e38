"""What admins do with verifications: list, open, search, decide, revoke, erase.

Admins see masked values only. Opening a person's record, and every search, is itself an audit
event. Bulk-access guard: every record an admin is shown, by any path (lists, the queue, a
record, a search, the audit trail, a decision's answer), counts once per distinct record and
hour; past ``admin_records_per_hour`` the admin is stopped, and the stop is audited, counted in
a metric and logged for operators.

Reasons are codes from ``REASON_CODES``: the audit trail, which cannot be erased, keeps only the
code. A reviewer's free-text note is sealed with the verification and erased with it.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, or_, select

from app import metrics
from app.crypto import seal, unseal
from app.errors import ProblemError
from app.identity import InvalidField, parse_id_number
from app.models import AuditEvent, Check, Client, Identity, Status, Verification
from app.models._types import utcnow
from app.ratelimit import raise_refusal
from app.schemas.admin import MAX_NOTE, REASON_CODES
from app.services import audit, codes, erasure, lifecycle, operator_notices
from app.services.runtime import Runtime
from app.services.tokens import adult_on_of, is_adult
from app.services.verifications import checks_of
from app.verifiers.base import CheckOutcome

logger = logging.getLogger(__name__)

MAX_PAGE = 100
NOTES_SEAL = "review-notes/v1"


@dataclass(frozen=True)
class Reason:
    """Why an admin acts: a documented code, and for decisions an optional free-text note."""

    code: str | None
    note: str | None = None


def check_reason(reason: Reason, what: str, *, note_allowed: bool = True) -> tuple[str, str]:
    """The reason's code and (stripped) note, or 422 ``reason_required``."""
    note = (reason.note or "").strip()[:MAX_NOTE]
    if reason.code not in REASON_CODES:
        raise ProblemError(
            "reason_required",
            f"Give a reason_code for {what}, one of: {', '.join(REASON_CODES)}",
        )
    if not note_allowed and (note or reason.code == "other"):
        raise ProblemError(
            "reason_required",
            f"No note is kept for {what}: give a reason_code other than 'other', and no note",
        )
    if reason.code == "other" and not note:
        raise ProblemError("reason_required", "The reason_code 'other' needs a note")
    return reason.code, note


def _keep_note(
    runtime: Runtime, verification: Verification, admin_id: str, action: str, code: str, note: str
) -> None:
    """Append a note to the verification's sealed notes (never to the audit trail)."""
    if not note:
        return
    aad = verification.id.encode()
    notes = review_notes(runtime, verification)
    notes.append(
        {
            "at": utcnow().isoformat(),
            "admin_id": admin_id,
            "action": action,
            "reason_code": code,
            "note": note,
        }
    )
    verification.review_notes_sealed = seal(
        runtime.master_key, NOTES_SEAL, json.dumps(notes, ensure_ascii=False).encode(), aad
    )


def review_notes(runtime: Runtime, verification: Verification) -> list[dict[str, str]]:
    """The reviewers' notes on a verification, oldest first (none once it is erased)."""
    if verification.review_notes_sealed is None:
        return []
    raw = unseal(
        runtime.master_key, NOTES_SEAL, verification.review_notes_sealed, verification.id.encode()
    )
    notes: list[dict[str, str]] = json.loads(raw)
    return notes


#: action -> (from states, to state)
DECISIONS: dict[str, tuple[tuple[Status, ...], Status]] = {
    "approve": ((Status.NEEDS_REVIEW,), Status.VERIFIED),
    "reject": ((Status.NEEDS_REVIEW,), Status.REJECTED),
    "revoke": (
        (Status.VERIFIED, Status.PENDING, Status.AWAITING_CODE, Status.NEEDS_REVIEW),
        Status.REVOKED,
    ),
}


@dataclass(frozen=True)
class Page:
    items: list[Verification]
    next_cursor: str | None


def _encode_cursor(created_at: datetime, vid: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at.isoformat(), vid]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, vid = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return _utc(datetime.fromisoformat(created)), str(vid)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProblemError("invalid_request", "The cursor is not valid") from exc


def _utc(value: datetime) -> datetime:
    """Dates without a zone are taken as UTC; ones that cannot be placed in UTC are refused."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ProblemError("invalid_request", "The date is out of range") from exc


async def list_verifications(
    session: AsyncSession,
    *,
    status: str | None = None,
    client_id: str | None = None,
    external_user_id: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable under inserts."""
    query = select(Verification)
    if status:
        query = query.where(Verification.status == status)
    if client_id:
        query = query.where(Verification.client_id == client_id)
    if external_user_id:
        query = query.where(Verification.external_user_id == external_user_id)
    if created_from:
        query = query.where(col(Verification.created_at) >= _utc(created_from))
    if created_to:
        query = query.where(col(Verification.created_at) < _utc(created_to))
    if cursor:
        at, vid = _decode_cursor(cursor)
        query = query.where(
            or_(
                col(Verification.created_at) < at,
                (col(Verification.created_at) == at) & (col(Verification.id) < vid),
            )
        )
    limit = max(1, min(limit, MAX_PAGE))
    rows = list(
        (
            await session.execute(
                query.order_by(
                    col(Verification.created_at).desc(), col(Verification.id).desc()
                ).limit(limit + 1)
            )
        ).scalars()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None)


async def counts_by_status(session: AsyncSession) -> dict[str, int]:
    rows = (
        await session.execute(
            select(Verification.status, func.count()).group_by(col(Verification.status))
        )
    ).all()
    counts = {s.value: 0 for s in Status}
    counts.update({status: int(n) for status, n in rows})
    return counts


async def shown(
    session: AsyncSession,
    runtime: Runtime,
    admin_id: str,
    record_ids: Iterable[str],
    *,
    what: str,
) -> None:
    """Count the records ``admin_id`` is about to be shown (bulk-access guard); 429 past the
    hourly cap, before anything is shown, with an audit event, a metric and a log line."""
    ids = list(record_ids)
    if await runtime.limits.see_records(admin_id, ids):
        return
    metrics.BULK_ACCESS_BLOCKED.labels(what).inc()
    logger.warning("bulk access blocked", extra={"admin_id": admin_id, "what": what})
    event = await audit.record(
        session,
        action="admin.bulk_access_blocked",
        subject_type="admin",
        subject_id=admin_id,
        actor_type="system",
        actor_id=None,
        data={
            "limit_per_hour": runtime.settings.admin_records_per_hour,
            "what": what,
            "records": len(set(ids)),
        },
    )
    operator_notices.queue(
        session,
        runtime.settings,
        "admin.bulk_access_blocked",
        {
            "admin_id": admin_id,
            "what": what,
            "records": len(set(ids)),
            "limit_per_hour": runtime.settings.admin_records_per_hour,
            "audit_seq": event.seq,
        },
    )
    raise ProblemError(
        "bulk_access_blocked",
        "You were shown more personal records this hour than allowed; this has been reported",
        headers={"Retry-After": "3600"},
        commit=True,
    )


def audited_records(events: Iterable[AuditEvent]) -> set[str]:
    """The verifications a page of audit events tells about (what the guard counts)."""
    return {e.subject_id for e in events if e.subject_type == "verification" and e.subject_id}


@dataclass(frozen=True)
class Detail:
    verification: Verification
    checks: list[Check]
    timeline: list[AuditEvent]
    client: Client | None
    adult: bool | None


async def open_record(
    session: AsyncSession, runtime: Runtime, admin_id: str, verification_id: str
) -> Detail:
    """A verification with its checks and audit timeline; audited as a read of a person's record."""
    verification = await session.get(Verification, verification_id)
    if verification is None:
        raise ProblemError("not_found", "No such verification")
    await shown(session, runtime, admin_id, [verification.id], what="record")
    await audit.record(
        session,
        action="admin.record_viewed",
        subject_type="verification",
        subject_id=verification.id,
        actor_type="admin",
        actor_id=admin_id,
        data={},
    )
    checks = list(
        (
            await session.execute(select(Check).where(Check.verification_id == verification.id))
        ).scalars()
    )
    timeline = list(
        (
            await session.execute(
                select(AuditEvent)
                .where(AuditEvent.subject_id == verification.id)
                .order_by(col(AuditEvent.seq))
            )
        ).scalars()
    )
    adult = None
    if verification.identity_id:
        identity = await session.get(Identity, verification.identity_id)
        if identity is not None:
            adult = is_adult(
                adult_on_of(runtime.master_key, identity), runtime.settings.legal_timezone
            )
    return Detail(
        verification, checks, timeline, await session.get(Client, verification.client_id), adult
    )


async def search_by_id_number(
    session: AsyncSession, runtime: Runtime, admin_id: str, id_number: str, reason: Reason
) -> list[Verification]:
    """Find verifications of a person through the blind index (every suite and key version).
    Requires a reason code (no note: a search belongs to no one verification); audited without
    the number itself. Each record found counts towards the bulk-access guard."""
    code, _ = check_reason(reason, "a search", note_allowed=False)
    try:
        canonical = parse_id_number(id_number).value
    except InvalidField as exc:
        raise ProblemError(exc.code, exc.detail) from None
    conditions = [
        (col(Identity.bidx_suite) == c.suite)
        & (col(Identity.bidx_version) == c.version)
        & (col(Identity.id_number_bidx) == c.digest)
        for c in runtime.blind.candidates("id_number", canonical)
    ]
    identity_ids = list(
        (await session.execute(select(Identity.id).where(or_(*conditions)))).scalars()
    )
    results: list[Verification] = []
    if identity_ids:
        results = list(
            (
                await session.execute(
                    select(Verification)
                    .where(col(Verification.identity_id).in_(identity_ids))
                    .order_by(col(Verification.created_at).desc())
                )
            ).scalars()
        )
    await shown(session, runtime, admin_id, [v.id for v in results], what="search")
    await audit.record(
        session,
        action="admin.searched_id_number",
        subject_type="admin",
        subject_id=admin_id,
        actor_type="admin",
        actor_id=admin_id,
        data={"reason_code": code, "results": [v.id for v in results]},
    )
    return results


async def decide(
    session: AsyncSession,
    runtime: Runtime,
    admin_id: str,
    verification_id: str,
    action: str,
    reason: Reason,
) -> Verification:
    """approve / reject a needs_review verification, or revoke one, with a reason code (and an
    optional note, kept sealed with the verification)."""
    code, note = check_reason(reason, "this decision")
    verification = await session.get(Verification, verification_id, with_for_update=True)
    if verification is None:
        raise ProblemError("not_found", "No such verification")
    await shown(session, runtime, admin_id, [verification.id], what="decision")
    allowed, to = DECISIONS[action]
    _keep_note(runtime, verification, admin_id, action, code, note)
    if action == "approve":
        return await _approve(session, runtime, admin_id, verification, code)
    try:
        await lifecycle.transition(
            session,
            verification,
            to,
            expect=allowed,
            reason=f"admin_{action}",
            actor_type="admin",
            actor_id=admin_id,
            data={"reason_code": code},
            valid_until=lifecycle.verified_until(runtime.settings),
        )
    except lifecycle.StaleState:
        raise ProblemError(
            "invalid_transition", f"Cannot {action} a verification that is {verification.status}"
        ) from None
    return verification


async def _approve(
    session: AsyncSession, runtime: Runtime, admin_id: str, verification: Verification, code: str
) -> Verification:
    """The reviewer settles the registry checks the automated run could not (recorded as
    ``manual_review``); possession of the phone is still proven by a code when the level asks
    for one: the verification resumes at ``awaiting_code`` rather than jumping to verified."""
    if verification.status != Status.NEEDS_REVIEW:
        raise ProblemError(
            "invalid_transition", f"Cannot approve a verification that is {verification.status}"
        )
    if verification.identity_id is None:
        # A network identity whose check never answered: nobody is known to approve.
        raise ProblemError(
            "invalid_transition",
            "No person is known for this verification; they must verify again",
        )
    checks = await checks_of(session, verification.id)
    for check in checks:
        if check.type in ("id_registry", "carrier_3e") and check.status != CheckOutcome.PASSED:
            lifecycle.record_check(check, CheckOutcome.PASSED, reason="manual_review")
    decision = lifecycle.after_checks(Status.NEEDS_REVIEW, checks, runtime.settings)
    approval: dict[str, Any] = {
        "reason": "admin_approve",
        "actor_type": "admin",
        "actor_id": admin_id,
        "data": {"reason_code": code},
    }
    if decision.status is not Status.AWAITING_CODE:
        await lifecycle.follow(session, verification, decision, runtime.settings, **approval)
        return verification
    if verification.sealed_subject is None:
        raise ProblemError(
            "invalid_transition",
            "The phone can no longer be reached for a code; the person must verify again",
        )
    client = await session.get(Client, verification.client_id)
    assert client is not None
    assert verification.phone_bidx is not None
    raise_refusal(
        await runtime.limits.hit_sms(
            client.mode, client.id, verification.phone_bidx, verification.identity_id
        ),
        "Too many codes sent to this phone",
        limit="sms_phone",
    )
    await lifecycle.follow(session, verification, decision, runtime.settings, **approval)
    await codes.issue(session, runtime, verification, codes.subject_phone(runtime, verification))
    return verification


async def erase(
    session: AsyncSession, runtime: Runtime, admin_id: str, verification_id: str, reason: Reason
) -> erasure.Receipt:
    """Erase (Art. 43) with a reason code; a note is refused, as erasure would wipe it."""
    code, _ = check_reason(reason, "an erasure", note_allowed=False)
    verification = await session.get(Verification, verification_id)
    if verification is None:
        raise ProblemError("not_found", "No such verification")
    await shown(session, runtime, admin_id, [verification.id], what="erasure")
    return await erasure.erase(
        session, verification, actor_type="admin", actor_id=admin_id, reason_code=code
    )


async def audit_events(
    session: AsyncSession,
    *,
    after_seq: int | None = None,
    action: str | None = None,
    subject_id: str | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Newest first; ``after_seq`` pages backwards (events with a smaller seq)."""
    query = select(AuditEvent)
    if after_seq is not None:
        query = query.where(col(AuditEvent.seq) < after_seq)
    if action:
        query = query.where(AuditEvent.action == action)
    if subject_id:
        query = query.where(AuditEvent.subject_id == subject_id)
    limit = max(1, min(limit, 500))
    return list(
        (await session.execute(query.order_by(col(AuditEvent.seq).desc()).limit(limit))).scalars()
    )


def event_out(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "occurred_at": event.occurred_at,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "action": event.action,
        "subject_type": event.subject_type,
        "subject_id": event.subject_id,
        "data": json.loads(event.data),
        "hash": event.hash,
    }
