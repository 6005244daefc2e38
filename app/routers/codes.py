"""Integrator API: SMS one-time codes of a verification."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import CLIENT_SECURITY, CurrentClient, RuntimeDep, SessionDep
from app.errors import problems
from app.models import Client
from app.routers.idempotency import KeyHeader, answer_for_client, idempotent
from app.routers.params import json_body, json_request_body
from app.schemas.codes import CodeSubmit
from app.schemas.verification import VerificationOut
from app.services import codes, verifications
from app.services.runtime import Runtime

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
    openapi_extra={**json_request_body(CodeSubmit), "security": CLIENT_SECURITY},
)
async def submit_code(
    verification_id: str, request: Request, idempotency_key: KeyHeader = None
) -> Response:
    # Resolves no FastAPI dependencies (app.routers.idempotency.answer_for_client); the body is
    # read after the client is authenticated, as a dependency-resolving route would.
    async def submit(client: Client, session: AsyncSession, runtime: Runtime) -> Response:
        body = await json_body(request, CodeSubmit)
        verification = await verifications.get_for_client(
            session, client, verification_id, lock=True
        )
        checks = await codes.submit(session, runtime, verification, body.code, locked=True)
        answer = await verifications.present(session, verification, checks)
        return Response(answer.model_dump_json(), media_type="application/json")

    return await answer_for_client(request, idempotency_key, submit)


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
