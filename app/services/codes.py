"""SMS one-time codes: issue, resend, check.

- A code is 6 digits from the OS CSPRNG, stored only as an HMAC under a derived key.
- It lives ``otp_ttl_seconds`` (5 minutes) and allows ``otp_max_attempts`` (5) tries.
- A try is counted *before* the code is compared, by a guarded ``UPDATE … WHERE attempts <
  max AND consumed_at IS NULL``, which also takes the row lock that serialises racing tries.
- The right code is consumed once (``consumed_at`` set under the same guard): of any number of
  racing requests with the right code, exactly one succeeds.
- Comparison is constant-time; only exact ASCII digits are accepted.
- Failed tries also count against the person (blind-index identity), across resends.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app import metrics
from app.crypto import DEFAULT_SUITE, Suite, as_suite, keyed_hash, seal, unseal
from app.errors import ProblemError
from app.models import Check, Client, OutboxJob, SmsCode, Status, Verification
from app.models._types import utcnow
from app.ratelimit import raise_refusal
from app.senders.base import OutgoingSms, SendResult
from app.services import audit, emergency, lifecycle, outbox
from app.services.runtime import Runtime
from app.services.verifications import checks_of
from app.verifiers.base import CheckOutcome, Subject

SMS_SEAL = "sms-payload/v1"
_CODE = re.compile(r"[0-9]{6}", re.ASCII)
SMS_TEMPLATE = "verification_code"
SMS_BODY = "【实名核验】您的验证码是 {code}, {ttl_minutes} 分钟内有效。请勿告诉他人。"

logger = logging.getLogger(__name__)


def code_hmac(master_key: bytes, code_id: str, code: str, suite: Suite = DEFAULT_SUITE) -> str:
    return keyed_hash(master_key, "otp", f"{code_id}:{code}".encode(), suite)


def subject_phone(runtime: Runtime, verification: Verification) -> str:
    if verification.sealed_subject is None:
        raise ProblemError(
            "verification_expired", "This verification no longer holds a phone to send to"
        )
    return Subject.open(
        runtime.master_key, verification.sealed_subject, verification.id.encode()
    ).phone


_CURRENT_CODE = (
    select(SmsCode)
    .where(col(SmsCode.verification_id) == bindparam("verification_id"))
    .where(col(SmsCode.superseded).is_(False))
    .order_by(col(SmsCode.created_at).desc())
    .limit(1)
)


async def current_code(session: AsyncSession, verification_id: str) -> SmsCode | None:
    """The newest code that is neither superseded nor consumed."""
    return (
        await session.execute(_CURRENT_CODE, {"verification_id": verification_id})
    ).scalar_one_or_none()


def message(message_id: str, payload: dict[str, Any]) -> OutgoingSms:
    """The SMS that carries a code (``payload``: its phone, code and minutes to live)."""
    return OutgoingSms(
        message_id=message_id,
        phone=str(payload["phone"]),
        template=SMS_TEMPLATE,
        params={"code": str(payload["code"]), "ttl_minutes": str(payload["ttl_minutes"])},
        body=SMS_BODY.format(code=payload["code"], ttl_minutes=payload["ttl_minutes"]),
    )


def sent(sender: str, message_id: str, result: SendResult) -> None:
    """Log and count one send (by the worker or in a transaction)."""
    logger.info(
        "sms send finished",
        extra={
            "job_id": message_id,
            "sender": sender,
            "delivered": result.delivered,
            "reason": result.reason,
        },
    )
    metrics.SMS_SENDS.labels(
        sender, "delivered" if result.delivered else result.reason or "failed"
    ).inc()


async def issue(
    session: AsyncSession,
    runtime: Runtime,
    verification: Verification,
    phone: str,
    *,
    mode: str | None = None,
) -> SmsCode:
    """Make a new code (superseding any earlier one) and queue its SMS in the outbox; or, when
    ``mode`` (the client's) sends through a sender that delivers in this transaction (the
    sandbox inbox) and ``REALNAME_INLINE_CHECKS`` is on, deliver it here."""
    settings = runtime.settings
    await session.execute(
        update(SmsCode)
        .where(col(SmsCode.verification_id) == verification.id, col(SmsCode.consumed_at).is_(None))
        .values(superseded=True)
    )
    now = utcnow()
    code = f"{secrets.randbelow(1_000_000):06d}"
    row = SmsCode(
        verification_id=verification.id,
        code_hmac="",
        max_attempts=settings.otp_max_attempts,
        expires_at=now + timedelta(seconds=settings.otp_ttl_seconds),
        created_at=now,
        suite=runtime.suite,
    )
    row.code_hmac = code_hmac(runtime.master_key, row.id, code, runtime.suite)
    payload = {"phone": phone, "code": code, "ttl_minutes": max(1, settings.otp_ttl_seconds // 60)}
    session.add(row)
    sender = runtime.senders.for_mode(mode) if mode is not None else None
    deliver_in = getattr(sender, "deliver_in", None) if settings.inline_checks else None
    if (
        sender is not None
        and deliver_in is not None
        and sender.name not in await emergency.quarantined(session)
    ):
        sent(sender.name, row.id, deliver_in(session, message(row.id, payload), verification.id))
    else:
        job = OutboxJob(kind="send_sms", verification_id=verification.id)
        job.payload = seal(
            runtime.master_key,
            SMS_SEAL,
            json.dumps(payload).encode(),
            job.id.encode(),
            runtime.suite,
        )
        outbox.queue(session, job)
    await session.flush()
    await audit.record(
        session,
        action="sms_code.issued",
        subject_type="verification",
        subject_id=verification.id,
        actor_type="system",
        actor_id=None,
        data={"code_id": row.id, "expires_at": row.expires_at.isoformat()},
    )
    return row


def open_payload(runtime: Runtime, job: OutboxJob) -> dict[str, str]:
    assert job.payload is not None
    data: dict[str, str] = json.loads(
        unseal(runtime.master_key, SMS_SEAL, job.payload, job.id.encode())
    )
    return data


async def _expire_if_due(session: AsyncSession, verification: Verification) -> None:
    if verification.expires_at is not None and utcnow() >= verification.expires_at:
        await lifecycle.transition(
            session,
            verification,
            Status.EXPIRED,
            expect=[Status.AWAITING_CODE],
            reason="verification_expired",
        )
        raise ProblemError("verification_expired", commit=True)


def _require_awaiting(verification: Verification) -> None:
    if verification.status == Status.AWAITING_CODE:
        return
    if verification.status == Status.LOCKED:
        raise ProblemError("attempts_exhausted", "No attempts are left for this verification")
    if verification.status == Status.EXPIRED:
        raise ProblemError("verification_expired")
    raise ProblemError(
        "verification_not_awaiting_code",
        f"The verification is {verification.status}, not awaiting a code",
    )


async def _reread_locked(session: AsyncSession, verification: Verification) -> None:
    """Re-read the verification under a row lock: submit, resend and the worker serialise on it,
    so a decision is taken on the state as it is now, not as it was when the request began."""
    await session.refresh(verification, with_for_update=True)


async def resend(
    session: AsyncSession, runtime: Runtime, client: Client, verification: Verification
) -> SmsCode:
    """A new code for a verification awaiting one; refused (429) by the per-phone and
    per-person limits. Also the way on after a send whose delivery is unknown."""
    await _reread_locked(session, verification)
    _require_awaiting(verification)
    await _expire_if_due(session, verification)
    assert verification.phone_bidx is not None
    raise_refusal(
        await runtime.limits.hit_sms(
            client.mode, client.id, verification.phone_bidx, verification.identity_id
        ),
        "Too many codes sent to this phone or person",
        limit="sms_phone",
    )
    return await issue(
        session, runtime, verification, subject_phone(runtime, verification), mode=client.mode
    )


async def submit(
    session: AsyncSession,
    runtime: Runtime,
    verification: Verification,
    code: str,
    *,
    locked: bool = False,
) -> list[Check]:
    """Check ``code``; on success the verification becomes ``verified``. ``locked``: the caller
    read ``verification`` with ``FOR UPDATE`` in this transaction (else it is read again so).

    Returns:
        The verification's checks as they now stand.

    Raises ProblemError (with ``commit=True`` where the attempt or a lock must persist).
    """
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise ProblemError("invalid_code_format", "The code must be exactly six ASCII digits")
    if not locked:
        await _reread_locked(session, verification)
    _require_awaiting(verification)
    await _expire_if_due(session, verification)
    identity_id = verification.identity_id or verification.id
    failed = await runtime.limits.failed_codes_of(verification.client_id, identity_id)
    if failed >= runtime.limits.failed_codes.amount:
        raise ProblemError(
            "rate_limited",
            "Too many failed codes for this person",
            headers={"Retry-After": "86400"},
        )
    current = await current_code(session, verification.id)
    if current is None:
        raise ProblemError("code_expired", "No code is active: ask for a new one")
    expected = code_hmac(runtime.master_key, current.id, code, as_suite(current.suite))
    right = hmac.compare_digest(current.code_hmac, expected)
    now = utcnow()
    # Count the attempt first; the guarded UPDATE also locks the row against racing tries. A
    # right code within its time is counted and used up in the same statement.
    consume = right and now < _aware(current.expires_at)
    counted = (
        await session.execute(
            _COUNT_TRY_CONSUMING if consume else _COUNT_TRY, {"code_id": current.id, "now": now}
        )
    ).first()
    if counted is None:
        await session.refresh(current)
        if current.consumed_at is not None:
            raise ProblemError("verification_not_awaiting_code", "This code was already used")
        if current.superseded:
            raise ProblemError("code_expired", "A newer code was sent: use that one")
        await _lock(session, runtime, verification)
        raise ProblemError("attempts_exhausted", commit=True)
    attempts, max_attempts, expires_at = counted
    if not consume and now >= _aware(expires_at):
        raise ProblemError("code_expired", "The code has expired: ask for a new one", commit=True)
    if not right:
        await runtime.limits.record_failed_code(verification.client_id, identity_id)
        if attempts >= max_attempts:
            await _lock(session, runtime, verification)
            raise ProblemError("attempts_exhausted", commit=True)
        remaining = max_attempts - attempts
        raise ProblemError(
            "code_incorrect",
            f"The code is not correct; {remaining} attempt(s) left",
            extra={"attempts_remaining": remaining},
            commit=True,
        )
    try:
        checks = await _settle_code(
            session, runtime, verification, CheckOutcome.PASSED, reason=None, attempts=attempts
        )
    except lifecycle.StaleState:
        raise ProblemError("verification_not_awaiting_code") from None
    if failed:  # nothing to clear otherwise: one round trip to the limits' storage fewer
        await runtime.limits.reset_failed_codes(verification.client_id, identity_id)
    return checks


def _count_try(consume: bool) -> Any:
    """The guarded ``UPDATE`` that counts a try (and with ``consume``, uses the code up)."""
    table = SmsCode.__table__  # type: ignore[attr-defined]
    values: dict[str, Any] = {"attempts": table.c.attempts + 1}
    if consume:
        values["consumed_at"] = bindparam("now")
    return (
        update(table)
        .where(
            table.c.id == bindparam("code_id"),
            table.c.consumed_at.is_(None),
            table.c.superseded.is_(False),
            table.c.attempts < table.c.max_attempts,
        )
        .values(values)
        .returning(table.c.attempts, table.c.max_attempts, table.c.expires_at)
    )


_COUNT_TRY = _count_try(consume=False)
_COUNT_TRY_CONSUMING = _count_try(consume=True)


async def _lock(session: AsyncSession, runtime: Runtime, verification: Verification) -> None:
    with contextlib.suppress(lifecycle.StaleState):
        await _settle_code(
            session, runtime, verification, CheckOutcome.FAILED, reason="attempts_exhausted"
        )


async def _settle_code(
    session: AsyncSession,
    runtime: Runtime,
    verification: Verification,
    outcome: CheckOutcome,
    *,
    reason: str | None,
    attempts: int | None = None,
) -> list[Check]:
    """Record the code check's ``outcome`` and make the move that follows (``verified`` for a
    right code, ``locked`` once the attempts are spent); return the checks."""
    checks = await checks_of(session, verification.id)
    code_check = next(c for c in checks if c.type == lifecycle.CODE_CHECK)
    lifecycle.record_check(code_check, outcome, reason=reason, attempts=attempts)
    decision = lifecycle.after_checks(Status(verification.status), checks, runtime.settings)
    await lifecycle.follow(session, verification, decision, runtime.settings)
    return checks


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
