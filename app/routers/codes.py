"""Integrator API: SMS one-time codes of a verification."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import CurrentClient, RuntimeDep, SessionDep
from app.errors import problems
from app.routers.idempotency import idempotent
from app.schemas.codes import CodeSubmit
from app.schemas.verification import VerificationOut
from app.services import codes, verifications

router = APIRouter(prefix="/v1/verifications/{verification_id}/sms-code", tags=["sms codes"])


@router.post(
    "",
    response_model=VerificationOut,
    summary="Submit the SMS code the person received",
    responses=problems(
        "code_incorrect",
        "code_expired",
        "attempts_exhausted",
        "invalid_code_format",
        "verification_not_awaiting_code",
        "rate_limited",
        "not_found",
    ),
)
@idempotent
async def submit_code(
    verification_id: str,
    body: CodeSubmit,
    client: CurrentClient,
    session: SessionDep,
    runtime: RuntimeDep,
) -> VerificationOut:
    verification = await verifications.get_for_client(session, client, verification_id, lock=True)
    checks = await codes.submit(session, runtime, verification, body.code, locked=True)
    return await verifications.present(session, verification, checks)


@router.post(
    "/resend",
    status_code=202,
    response_model=VerificationOut,
    summary="Send a new code (the previous one stops working)",
    responses=problems(
        "rate_limited",
        "verification_not_awaiting_code",
        "verification_expired",
        "attempts_exhausted",
        "not_found",
    ),
)
@idempotent
async def resend_code(
    verification_id: str,
    client: CurrentClient,
    session: SessionDep,
    runtime: RuntimeDep,
) -> VerificationOut:
    verification = await verifications.get_for_client(session, client, verification_id)
    await codes.resend(session, runtime, client, verification)
    return await verifications.present(session, verification)
