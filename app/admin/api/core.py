"""Admin API: sign-in, review, decisions, search, audit trail, client creation, signing keys,
emergency measures.

Every route needs an admin session; integrator keys get 403 and anonymous calls 401.
Reviewers decide, auditors only read, admins also manage clients and keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response

from app.admin import auth
from app.admin.auth import AnyAdmin, CurrentAdmin, Reviewer, SuperAdmin
from app.db import flush_erased_pages
from app.deps import RuntimeDep, SessionDep, client_address
from app.errors import problems
from app.models import Verification
from app.schemas.admin import (
    AdminCheckOut,
    AdminVerification,
    AdminVerificationDetail,
    AdminVerificationPage,
    AuditEventOut,
    ClientCreated,
    ClientIn,
    DailyCostOut,
    ErasureIn,
    ReasonIn,
    ReviewNote,
    SearchIn,
    SessionOut,
    SignInIn,
    Stats,
)
from app.schemas.emergency import EmergencyIn, EmergencyOut, MeasureOut
from app.schemas.queries import AuditFilters, VerificationFilters
from app.schemas.verification import Masked
from app.services import audit, clients, costs, emergency, export, keys, review
from app.services.review import Reason

router = APIRouter(prefix="/v1/admin", tags=["admin"])

AUTH = problems("unauthorized", "forbidden", "session_expired", "insufficient_role")


def row_out(v: Verification) -> AdminVerification:
    return AdminVerification(
        id=v.id,
        client_id=v.client_id,
        external_user_id=v.external_user_id,
        status=v.status,
        status_reason=v.status_reason,
        level=v.level,
        masked=Masked(real_name=v.masked_name, id_number=v.masked_id_number, phone=v.masked_phone),
        created_at=v.created_at,
        updated_at=v.updated_at,
    )


@router.post(
    "/sessions",
    status_code=201,
    response_model=SessionOut,
    summary="Sign in",
    responses=problems("invalid_credentials", "rate_limited"),
)
async def sign_in(
    body: SignInIn, request: Request, session: SessionDep, runtime: RuntimeDep
) -> SessionOut:
    signed = await auth.sign_in_with(session, runtime, body, client_address(request))
    return SessionOut(
        token=signed.token,
        csrf_token=signed.csrf_token,
        expires_at=signed.session.expires_at,
        username=signed.admin.username,
        role=signed.admin.role,
    )


@router.delete("/sessions/current", status_code=204, summary="Sign out", responses=AUTH)
async def sign_out(ctx: CurrentAdmin, session: SessionDep) -> Response:
    await auth.sign_out(session, ctx.session)
    return Response(status_code=204)


@router.get(
    "/stats",
    response_model=Stats,
    summary="Verifications by status, provider cost per client per day, breaker states",
    responses=AUTH,
)
async def stats(_: AnyAdmin, session: SessionDep, runtime: RuntimeDep) -> Stats:
    daily = await costs.daily(session, runtime.settings, runtime.senders.live.name)
    return Stats(
        by_status=await review.counts_by_status(session),
        costs=[DailyCostOut.model_validate(row, from_attributes=True) for row in daily],
        breakers=runtime.verifiers.breaker_states(),
    )


@router.get(
    "/verifications",
    response_model=AdminVerificationPage,
    summary="List verifications (masked)",
    responses={**AUTH, **problems("bulk_access_blocked")},
)
async def list_verifications(
    ctx: AnyAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
    filters: Annotated[VerificationFilters, Query()],
) -> AdminVerificationPage:
    page = await review.list_verifications(session, **filters.model_dump())
    # Every admin read of people's (masked) records is itself an audit event.
    await review.list_shown(
        session,
        runtime,
        ctx.admin.id,
        [v.id for v in page.items],
        status=filters.status,
        client_id=filters.client_id,
    )
    return AdminVerificationPage(
        data=[row_out(v) for v in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/verifications/{verification_id}",
    response_model=AdminVerificationDetail,
    summary="One verification with its checks and audit timeline (audited read)",
    responses=problems("not_found", "bulk_access_blocked", "unauthorized", "forbidden"),
)
async def verification_detail(
    verification_id: str, ctx: AnyAdmin, session: SessionDep, runtime: RuntimeDep
) -> AdminVerificationDetail:
    detail = await review.open_record(session, runtime, ctx.admin.id, verification_id)
    return AdminVerificationDetail(
        **row_out(detail.verification).model_dump(),
        checks=[
            AdminCheckOut(type=c.type, status=c.status, reason=c.reason, verifier=c.verifier)
            for c in detail.checks
        ],
        timeline=[AuditEventOut(**audit.event_out(e)) for e in detail.timeline],
        notes=[ReviewNote(**n) for n in review.review_notes(runtime, detail.verification)],
        client_name=detail.client.name if detail.client else None,
        adult=detail.adult,
    )


@router.get(
    "/exports/{verification_id}",
    summary="The user's data export (PIPL Art. 45), as the client API gives it (audited read)",
    responses=problems("not_found", "bulk_access_blocked", "unauthorized", "forbidden"),
)
async def verification_export(
    verification_id: str, ctx: AnyAdmin, session: SessionDep, runtime: RuntimeDep
) -> dict[str, Any]:
    detail = await review.open_record(session, runtime, ctx.admin.id, verification_id)
    return await export.build(
        session, detail.verification, actor_type="admin", actor_id=ctx.admin.id
    )


@router.post(
    "/verifications/search",
    response_model=list[AdminVerification],
    summary="Find a person's verifications by ID number (blind index; needs a reason; audited)",
    responses=problems(
        "reason_required",
        "invalid_reason_code",
        "invalid_id_number",
        "bulk_access_blocked",
        "unauthorized",
    ),
)
async def search(
    body: SearchIn, ctx: Reviewer, session: SessionDep, runtime: RuntimeDep
) -> list[AdminVerification]:
    found = await review.search_by_id_number(
        session, runtime, ctx.admin.id, body.id_number, Reason(body.code)
    )
    return [row_out(v) for v in found]


@router.post(
    "/verifications/{verification_id}/erase",
    response_model=AdminVerification,
    summary="Erase the person's data (Art. 43), with a reason",
    responses=problems(
        "reason_required",
        "invalid_reason_code",
        "not_found",
        "insufficient_role",
        "bulk_access_blocked",
    ),
)
async def erase(
    verification_id: str,
    body: ErasureIn,
    ctx: SuperAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
    background: BackgroundTasks,
) -> AdminVerification:
    verification = await review.erase(
        session, runtime, ctx.admin.id, verification_id, Reason(body.code)
    )
    background.add_task(flush_erased_pages, runtime.engine)
    return row_out(verification)


@router.post(
    "/verifications/{verification_id}/{action}",
    response_model=AdminVerification,
    summary="Approve or reject a needs_review verification, or revoke one (reason required)",
    responses=problems(
        "invalid_transition",
        "reason_required",
        "invalid_reason_code",
        "not_found",
        "insufficient_role",
        "bulk_access_blocked",
    ),
)
async def decide(
    verification_id: str,
    action: Literal["approve", "reject", "revoke"],
    body: ReasonIn,
    ctx: Reviewer,
    session: SessionDep,
    runtime: RuntimeDep,
) -> AdminVerification:
    verification = await review.decide(
        session, runtime, ctx.admin.id, verification_id, action, Reason(body.code, body.note)
    )
    return row_out(verification)


@router.get(
    "/audit-events",
    response_model=list[AuditEventOut],
    summary="The audit trail, newest first",
    responses={**AUTH, **problems("bulk_access_blocked")},
)
async def audit_events(
    ctx: AnyAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
    filters: Annotated[AuditFilters, Query()],
) -> list[AuditEventOut]:
    events = await review.read_audit(session, runtime, ctx.admin.id, filters)
    return [AuditEventOut(**audit.event_out(e)) for e in events]


@router.post(
    "/clients",
    status_code=201,
    response_model=ClientCreated,
    summary="Create a client (key shown once)",
    responses=AUTH,
)
async def create_client(
    body: ClientIn, ctx: SuperAdmin, session: SessionDep, runtime: RuntimeDep
) -> ClientCreated:
    client, api_key = await clients.create_client(
        session,
        runtime.master_key,
        name=body.name,
        mode=body.mode,
        default_level=body.default_level,
        actor_id=ctx.admin.id,
    )
    return ClientCreated(**client.model_dump(), api_key=api_key)


@router.post("/signing-keys/rotate", summary="Rotate the token signing key", responses=AUTH)
async def rotate_signing_key(
    ctx: SuperAdmin, session: SessionDep, runtime: RuntimeDep
) -> dict[str, str]:
    key = await keys.rotate(session, runtime.master_key, actor_id=ctx.admin.id)
    runtime.keyring.forget_active()
    return {"kid": key.kid}


@router.get(
    "/emergency",
    response_model=list[MeasureOut],
    summary="Emergency measures in force (suspensions, quarantines)",
    responses=AUTH,
)
async def emergency_measures(_: AnyAdmin, session: SessionDep) -> list[MeasureOut]:
    return [MeasureOut(**emergency.measure_json(m)) for m in await emergency.in_force(session)]


@router.post(
    "/emergency/{action}",
    response_model=EmergencyOut,
    summary="Take an emergency action (Art. 25): suspend or resume issuance, revoke every "
    "token, quarantine or release a provider",
    responses=problems(
        "reason_required",
        "invalid_reason_code",
        "unknown_client",
        "unknown_provider",
        "not_suspended",
        "not_quarantined",
        "insufficient_role",
        "not_found",
    ),
)
async def emergency_action(
    action: Literal[
        "suspend-issuance",
        "resume-issuance",
        "revoke-tokens",
        "quarantine-provider",
        "release-provider",
    ],
    body: EmergencyIn,
    ctx: SuperAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> EmergencyOut:
    outcome = await emergency.act_as_admin(
        session,
        runtime,
        ctx.admin.id,
        action=action,
        reason_code=body.reason_code,
        client_id=body.client_id,
        provider=body.provider,
    )
    return EmergencyOut.model_validate(outcome.as_json())
