"""The person's copy of their data (PIPL Art. 45): everything held about one user of one client.

Masked values only (the service holds nothing more readable), statuses with their times,
checks and reasons, consent, tokens, SMS code metadata (never a code), the events sent to the
client and the audit events about them. Nothing of any other client. The export itself is an
audit event.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.models import (
    AuditEvent,
    Check,
    Event,
    ServiceToken,
    SmsCode,
    Status,
    Verification,
)
from app.models._types import utcnow
from app.services import audit, consent

FORMAT = "realname.export/v1"
_STATUSES = frozenset(s.value for s in Status)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _rows(session: AsyncSession, model: Any, column: Any, ids: list[str]) -> list[Any]:
    return list((await session.execute(select(model).where(col(column).in_(ids)))).scalars())


async def build(
    session: AsyncSession, verification: Verification, *, actor_type: str, actor_id: str | None
) -> dict[str, Any]:
    """The export of the user behind ``verification`` at its client; audited."""
    mine = list(
        (
            await session.execute(
                select(Verification)
                .where(
                    Verification.client_id == verification.client_id,
                    Verification.external_user_id == verification.external_user_id,
                )
                .order_by(col(Verification.created_at))
            )
        ).scalars()
    )
    ids = [v.id for v in mine]
    checks = await _rows(session, Check, Check.verification_id, ids)
    tokens = await _rows(session, ServiceToken, ServiceToken.verification_id, ids)
    codes = await _rows(session, SmsCode, SmsCode.verification_id, ids)
    notices = [
        e
        for e in await _rows(session, Event, Event.verification_id, ids)
        if e.client_id == verification.client_id
    ]
    events = list(
        (
            await session.execute(
                select(AuditEvent)
                .where(col(AuditEvent.subject_id).in_(ids))
                .order_by(col(AuditEvent.seq))
            )
        ).scalars()
    )
    exported = await audit.record(
        session,
        action="verification.exported",
        subject_type="verification",
        subject_id=verification.id,
        actor_type=actor_type,
        actor_id=actor_id,
        data={"verifications": len(ids)},
    )
    out = []
    for v in mine:
        own_events = [e for e in events if e.subject_id == v.id]
        history = [
            {
                "status": "pending" if e.action == "verification.created" else e.action[13:],
                "at": _ts(e.occurred_at),
                "reason": json.loads(e.data).get("reason"),
            }
            for e in own_events
            if e.action.startswith("verification.")
            and (e.action == "verification.created" or e.action[13:] in _STATUSES)
        ]
        out.append(
            {
                "id": v.id,
                "status": v.status,
                "status_reason": v.status_reason,
                "level": v.level,
                "id_type": v.id_type,
                "masked": {
                    "real_name": v.masked_name,
                    "id_number": v.masked_id_number,
                    "phone": v.masked_phone,
                },
                "created_at": _ts(v.created_at),
                "updated_at": _ts(v.updated_at),
                "valid_until": _ts(v.expires_at),
                "erased_at": _ts(v.erased_at),
                "superseded_by": v.superseded_by,
                "status_history": history,
                "consent": (await consent.consent_of(session, v)).model_dump(mode="json"),
                "checks": [
                    {
                        "type": c.type,
                        "status": c.status,
                        "reason": c.reason,
                        "attempts": c.attempts,
                        "updated_at": _ts(c.updated_at),
                    }
                    for c in checks
                    if c.verification_id == v.id
                ],
                "sms_codes": [
                    {
                        "sent_at": _ts(c.created_at),
                        "expires_at": _ts(c.expires_at),
                        "attempts": c.attempts,
                        "used_at": _ts(c.consumed_at),
                        "superseded": c.superseded,
                    }
                    for c in codes
                    if c.verification_id == v.id
                ],
                "tokens": [
                    {
                        "jti": t.jti,
                        "issued_at": _ts(t.issued_at),
                        "expires_at": _ts(t.expires_at),
                        "revoked_at": _ts(t.revoked_at),
                        "revoked_reason": t.revoked_reason,
                    }
                    for t in sorted(tokens, key=lambda t: t.issued_at)
                    if t.verification_id == v.id
                ],
                "events": [
                    {
                        "id": e.id,
                        "type": e.type,
                        "created_at": _ts(e.created_at),
                        "status": e.status,
                        "reason": e.reason,
                        "jti": e.jti,
                    }
                    for e in sorted(notices, key=lambda e: e.created_at)
                    if e.verification_id == v.id
                ],
                "audit_events": [
                    {
                        "seq": e.seq,
                        "at": _ts(e.occurred_at),
                        "action": e.action,
                        "actor_type": e.actor_type,
                        "data": json.loads(e.data),
                        "hash": e.hash,
                    }
                    for e in own_events
                ],
            }
        )
    return {
        "format": FORMAT,
        "exported_at": _ts(utcnow()),
        "client_id": verification.client_id,
        "external_user_id": verification.external_user_id,
        "export_audit_seq": exported.seq,
        "verifications": out,
    }
