"""Test mode only: the sandbox SMS inbox."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import CurrentClient, SessionDep
from app.errors import ProblemError, problems
from app.schemas.codes import SandboxMessageOut, SandboxMessages
from app.schemas.text import SafeStr
from app.services import sandbox, verifications

router = APIRouter(prefix="/v1/sandbox", tags=["sandbox"])

#: The six-digit code in a message the service wrote (``app.services.codes.SMS_BODY``).
_CODE = re.compile(r"(?<![0-9])[0-9]{6}(?![0-9])")


def code_in(body: str) -> str | None:
    found = _CODE.search(body)
    return found.group(0) if found else None


@router.get(
    "/messages",
    response_model=SandboxMessages,
    summary="SMS messages the sandbox 'delivered' for a verification, newest first",
    responses=problems("sandbox_only", "not_found"),
)
async def sandbox_messages(
    verification_id: Annotated[SafeStr, Query(max_length=40)],
    client: CurrentClient,
    session: SessionDep,
) -> SandboxMessages:
    if client.mode != "test":
        raise ProblemError("sandbox_only", "The sandbox inbox is only for test-mode keys")
    await verifications.get_for_client(session, client, verification_id)
    rows = await sandbox.messages(session, verification_id)
    return SandboxMessages(
        data=[
            SandboxMessageOut(
                id=m.id,
                verification_id=m.verification_id,
                to=m.to_masked,
                body=m.body,
                code=code_in(m.body),
                created_at=m.created_at,
                expires_at=m.expires_at,
            )
            for m in rows
        ]
    )
