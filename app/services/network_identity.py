"""Verification by national network identity (国家网络身份认证公共服务: 网号 / 网证).

Intake takes no name, ID number or phone: only the opaque credential (the result token of the
platform's app flow) and the mode the user chose. The credential is held sealed on the
verification while its one check (``network_identity``) runs, like the resident-ID subject, and
wiped when the verification leaves ``pending``. A passing answer's app-scoped identifier
(网络身份应用标识) is kept only as a keyed blind index on an identity (so the same person is
recognised again at this client and the one-user-per-person rule holds); its age band sets the
sealed coming-of-age date behind the token's ``adult`` claim.

Levels
------
The national service's modes map onto the service's levels:

=====  ==========================================  ============================================
level  modes that reach it                         why
=====  ==========================================  ============================================
L1     any (网证 and up)                           the state-issued credential was presented
L2     网证+口令, 网证+人脸, 网证+口令+人脸            a second factor held by the person
L3     网证+人脸, 网证+口令+人脸                       a live face matched by the national service
=====  ==========================================  ============================================

A request whose declared mode does not reach its level is refused at intake
(``network_identity_mode_too_weak``); an answer whose performed mode does not reach it is
``rejected`` / ``mode_too_weak``.

Age band -> ``adult``: ``adult`` means adult from the day of the verification; ``14_to_17``,
``under_14`` or no band mean not adult (the safe default for minor protection) until the person
verifies again with an adult band.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from app import metrics
from app.crypto import seal, unseal
from app.db import session_scope
from app.errors import ProblemError
from app.identity import InvalidField, check_external_user_id
from app.models import Check, Client, Status, Verification
from app.models._types import utcnow
from app.schemas.network_identity import NetworkIdentityCreate
from app.services import costs, emergency, lifecycle
from app.services.checks import record_answer, settle
from app.services.runtime import Runtime
from app.services.verifications import (
    _bind,
    consented_policy,
    create_pending,
    identity_for,
    resolve_level,
)
from app.verifiers.base import CheckOutcome
from app.verifiers.network_identity import (
    CHECK_TYPE,
    NetworkCredential,
    NetworkIdentityResult,
    run_network_check,
)

logger = logging.getLogger(__name__)

ID_TYPE = "cn_network_identity"
#: The outbox job that runs the check (the resident-ID checks are ``run_checks``).
JOB_KIND = "run_network_identity_check"
CREDENTIAL_SEAL = "network-credential/v1"
#: The blind-index field of the app-scoped identifier (its own derived key).
INDEX_FIELD = "network_identity_app_id"
LEVEL_MODES: dict[str, frozenset[str]] = {
    "L1": frozenset(
        {"credential", "credential_password", "credential_face", "credential_password_face"}
    ),
    "L2": frozenset({"credential_password", "credential_face", "credential_password_face"}),
    "L3": frozenset({"credential_face", "credential_password_face"}),
}
#: Unavailable reasons that retrying soon will not cure: straight to manual review.
NO_RETRY = frozenset({"network_identity_not_enabled", "verifier_error", "provider_quarantined"})
#: The coming-of-age date of someone not known to be an adult: never reached in practice.
NOT_ADULT = date.max


def check_body(body: NetworkIdentityCreate) -> None:
    """Refuse an external user id that holds an ID number or phone number (422
    ``invalid_external_user_id``), as for resident-ID requests: minimal provision holds for the
    integrator's own field too."""
    try:
        check_external_user_id(body.external_user_id)
    except InvalidField as exc:
        raise ProblemError(
            exc.code,
            f"/{exc.field}: {exc.detail}",
            extra={
                "errors": [{"pointer": f"/{exc.field}", "code": exc.code, "detail": exc.detail}]
            },
        ) from None


def fingerprint_body(body: NetworkIdentityCreate) -> dict[str, object]:
    """What makes two requests 'the same' for Idempotency-Key purposes (keyed-hashed, never
    stored as is)."""
    return {
        "external_user_id": body.external_user_id,
        "id_type": body.id_type,
        "credential": body.credential,
        "mode": body.mode,
        "policy_version": body.consent.policy_version,
        "level": body.level,
    }


def adult_on_for(age_band: str | None, timezone: str, now: datetime | None = None) -> date:
    """The coming-of-age date that an age band supports (see the module docstring)."""
    if age_band == "adult":
        return (now or utcnow()).astimezone(ZoneInfo(timezone)).date()
    return NOT_ADULT


async def create(
    session: AsyncSession, runtime: Runtime, client: Client, body: NetworkIdentityCreate
) -> tuple[Verification, list[Check]]:
    """Create a ``pending`` network identity verification with its check, sealed credential,
    queued job and audit event, in the caller's transaction."""
    if runtime.verifiers.network_for_mode(client.mode) is None:
        raise ProblemError(
            "network_identity_not_enabled",
            "This service has no network identity gateway for live clients",
        )
    level = resolve_level(client, body.level)
    if body.mode not in LEVEL_MODES[level]:
        raise ProblemError(
            "network_identity_mode_too_weak",
            f"{level} needs one of: {', '.join(sorted(LEVEL_MODES[level]))}",
        )
    policy = await consented_policy(session, runtime, body.consent.policy_version)
    credential = json.dumps([body.credential, body.mode]).encode()
    return await create_pending(
        session,
        runtime,
        client,
        external_user_id=body.external_user_id,
        level=level,
        id_type=ID_TYPE,
        policy=policy,
        seal=lambda aad: seal(runtime.master_key, CREDENTIAL_SEAL, credential, aad, runtime.suite),
        check_types=[CHECK_TYPE],
        job_kind=JOB_KIND,
        audit_data={"id_type": ID_TYPE, "mode": body.mode},
    )


async def process(runtime: Runtime, verification_id: str) -> bool:
    """Run the network identity check of a pending verification and move it on (the outbox
    job's handler). The verifier runs outside any transaction; the result is recorded, and the
    verification moved, in one short transaction guarded on ``pending``. True when it queued a
    job due now (never)."""
    async with session_scope(runtime.sessions) as session:
        verification = await session.get(Verification, verification_id)
        if (
            verification is None
            or verification.status != Status.PENDING
            or verification.sealed_subject is None
        ):
            return False
        client = await session.get(Client, verification.client_id)
        assert client is not None
        check = (
            await session.execute(
                select(Check).where(
                    Check.verification_id == verification_id, Check.type == CHECK_TYPE
                )
            )
        ).scalar_one()
        token, mode = json.loads(
            unseal(
                runtime.master_key,
                CREDENTIAL_SEAL,
                verification.sealed_subject,
                verification.id.encode(),
            )
        )
        quarantine = await emergency.quarantined(session)
    verifier = runtime.verifiers.network_for_mode(client.mode)
    if verifier is None:
        name, result = "none", NetworkIdentityResult.unavailable("network_identity_not_enabled")
    elif verifier.name in quarantine:  # Art. 25: not called; a person decides instead
        name, result = verifier.name, NetworkIdentityResult.unavailable("provider_quarantined")
    else:
        name = verifier.name
        result = await run_network_check(
            verifier,
            NetworkCredential(token, mode),
            attempt_key=f"{verification_id}:{CHECK_TYPE}:{check.attempts + 1}",
        )
    metrics.CHECKS.labels(CHECK_TYPE, name, result.outcome.value, result.reason or "").inc()
    if result.billable:
        costs.record_billable(runtime.settings, name, client.id)
    logger.info(
        "check finished",
        extra={
            "verification_id": verification_id,
            "check": CHECK_TYPE,
            "verifier": name,
            "outcome": result.outcome.value,
            "reason": result.reason,
        },
    )
    async with session_scope(runtime.sessions) as session:
        try:
            await _record(session, runtime, verification_id, name, result)
        except lifecycle.StaleState:
            logger.info(
                "verification moved on meanwhile", extra={"verification_id": verification_id}
            )
    return False


async def _record(
    session: AsyncSession,
    runtime: Runtime,
    verification_id: str,
    verifier_name: str,
    result: NetworkIdentityResult,
) -> None:
    verification = await session.get(Verification, verification_id, with_for_update=True)
    if verification is None or verification.status != Status.PENDING:
        return
    check = (
        await session.execute(
            select(Check).where(Check.verification_id == verification_id, Check.type == CHECK_TYPE)
        )
    ).scalar_one()
    if result.outcome is CheckOutcome.PASSED and result.mode not in LEVEL_MODES[verification.level]:
        result = replace(result, outcome=CheckOutcome.FAILED, reason="mode_too_weak")
    record_answer(check, verifier_name, result)
    await session.flush()
    decision = await settle(
        session, runtime, verification, [check], job_kind=JOB_KIND, no_retry=NO_RETRY
    )
    if decision.status is Status.VERIFIED:
        await _pass(session, runtime, verification, result)


async def _pass(
    session: AsyncSession,
    runtime: Runtime,
    verification: Verification,
    result: NetworkIdentityResult,
) -> None:
    """Bind the person (by the blind index of the app-scoped identifier) and verify."""
    assert result.app_id is not None
    client = await session.get(Client, verification.client_id)
    assert client is not None
    identity_id = await identity_for(
        session,
        runtime,
        field=INDEX_FIELD,
        value=result.app_id,
        adult_on=adult_on_for(result.age_band, runtime.settings.legal_timezone),
        replace_adult_on=result.age_band is not None,
        id_type=ID_TYPE,
    )
    try:
        await _bind(session, client, identity_id, verification.external_user_id)
    except ProblemError as exc:  # this person is another live user of the client
        await lifecycle.transition(
            session,
            verification,
            Status.REJECTED,
            expect=[Status.PENDING],
            reason=exc.code,
            data={"check": CHECK_TYPE},
        )
        return
    verification.identity_id = identity_id
    await session.flush()
    await lifecycle.transition(
        session,
        verification,
        Status.VERIFIED,
        expect=[Status.PENDING],
        valid_until=lifecycle.verified_until(runtime.settings),
        data={"mode": result.mode},
    )
