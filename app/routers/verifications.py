"""Integrator API: verifications. Thin: parse, call a service, shape the answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import flush_erased_pages
from app.deps import AdmitRegistration, CurrentClient, RuntimeDep, SessionDep
from app.errors import problems
from app.identity import Subject
from app.models import Client, Status
from app.routers.idempotency import idempotent
from app.routers.params import DateTimeQuery
from app.schemas.network_identity import NetworkIdentityCreate, VerificationRequest
from app.schemas.text import SafeStr
from app.schemas.verification import ConsentReceiptOut, VerificationOut, VerificationPage
from app.services import checks as checks_service
from app.services import (
    consent,
    emergency,
    erasure,
    export,
    network_identity,
    review,
    verifications,
)
from app.services.runtime import Runtime

router = APIRouter(prefix="/v1/verifications", tags=["verifications"])


@dataclass(frozen=True)
class Intake:
    """A registration's canonical values and their storable forms (none for a network
    identity)."""

    canonical: Subject | None
    prepared: verifications.Prepared | None


def _canonical(body: VerificationRequest) -> Subject | None:
    """The checked, canonical values of the request (422 for bad ones)."""
    if isinstance(body, NetworkIdentityCreate):
        network_identity.check_body(body)
        return None
    return verifications.canonicalise(body)


def _same_registration(body: VerificationRequest, **_: Any) -> object:
    """What makes two registrations the same for ``Idempotency-Key``: canonical values."""
    canonical = _canonical(body)
    if isinstance(body, NetworkIdentityCreate):
        return network_identity.fingerprint_body(body)
    assert canonical is not None
    return verifications.fingerprint_body(body, canonical)


async def _prepare_registration(
    body: VerificationRequest, client: Client, session: AsyncSession, runtime: Runtime, **_: Any
) -> Intake:
    """Before the key is claimed: the checks, the Art. 25 suspension (after any replay of a
    stored answer), and the slow hashing (outside the claim's transaction lock)."""
    canonical = _canonical(body)
    await emergency.ensure_issuing(
        session, client.id, runtime.settings.issuance_retry_after_seconds
    )
    if canonical is None:
        return Intake(None, None)
    return Intake(canonical, await verifications.prepare(runtime, canonical))


@router.post(
    "",
    status_code=201,
    response_model=VerificationOut,
    summary="Start verifying an end user's real-name identity (resident ID or network identity)",
    # First of all (before authentication, the body and the idempotency claim): a registration
    # past this process's limit is refused at once and nothing of it is stored.
    dependencies=[AdmitRegistration],
    responses=problems(
        "invalid_real_name",
        "network_identity_not_enabled",
        "network_identity_mode_too_weak",
        "invalid_id_number",
        "invalid_phone",
        "invalid_external_user_id",
        "consent_required",
        "unsupported_id_type",
        "level_too_low",
        "unknown_field",
        "invalid_request",
        "unauthorized",
        "identity_in_use",
        "idempotency_conflict",
        "rate_limited",
        "payload_too_large",
        "unsupported_media_type",
        "malformed_json",
        "issuance_suspended",
        "overloaded",
    ),
)
@idempotent(
    fingerprint=_same_registration,
    prepare=_prepare_registration,
    resource_of=lambda out: str(out.id),
)
async def create_verification(
    body: VerificationRequest,
    client: CurrentClient,
    session: SessionDep,
    runtime: RuntimeDep,
    prepared: Intake,
) -> VerificationOut:
    if isinstance(body, NetworkIdentityCreate):
        verification, checks = await network_identity.create(session, runtime, client, body)
    else:
        assert prepared.canonical is not None
        assert prepared.prepared is not None
        inline = checks_service.runs_inline(runtime, client.mode)
        verification, checks = await verifications.create(
            session,
            runtime,
            client,
            body,
            prepared.canonical,
            prepared.prepared,
            queue=not inline,
        )
        if inline:
            await checks_service.run_now(
                session, runtime, client, verification, checks, prepared.canonical
            )
    return await verifications.present(session, verification, checks)


@router.get(
    "",
    response_model=VerificationPage,
    summary="List your verifications, newest first (masked values only)",
    description="Reconcile after an outage without keeping every id: filter by your "
    "`external_user_id`, by `status` or by creation time, and follow `next_cursor` (as `after`) "
    "page by page. Counts against the client's request quota like every read.",
    responses=problems("unauthorized", "rate_limited", "invalid_request"),
)
async def list_verifications(
    client: CurrentClient,
    session: SessionDep,
    external_user_id: Annotated[SafeStr | None, Query(min_length=1, max_length=200)] = None,
    status: Status | None = None,
    created_after: DateTimeQuery | None = None,
    after: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=400,
            pattern=r"^[A-Za-z0-9_=-]+$",
            description="`next_cursor` of the previous page",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> VerificationPage:
    page = await review.list_verifications(
        session,
        client_id=client.id,
        external_user_id=external_user_id,
        status=status,
        created_from=created_after,
        cursor=after,
        limit=limit,
    )
    return VerificationPage(
        data=[await verifications.present(session, v) for v in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/{verification_id}",
    response_model=VerificationOut,
    summary="Read a verification",
    responses=problems("unauthorized", "not_found"),
)
async def get_verification(
    verification_id: str, client: CurrentClient, session: SessionDep
) -> VerificationOut:
    verification = await verifications.get_for_client(session, client, verification_id)
    return await verifications.present(session, verification)


@router.delete(
    "/{verification_id}",
    response_model=VerificationOut,
    summary="Erase the person's data (Art. 43); returns the tombstone with an erasure receipt",
    responses=problems("unauthorized", "not_found"),
)
@idempotent
async def erase_verification(
    verification_id: str,
    client: CurrentClient,
    session: SessionDep,
    runtime: RuntimeDep,
    background: BackgroundTasks,
) -> VerificationOut:
    verification = await verifications.get_for_client(session, client, verification_id)
    await erasure.erase(session, verification, actor_type="client", actor_id=client.id)
    background.add_task(flush_erased_pages, runtime.engine)  # after the commit
    return await verifications.present(session, verification)


@router.get(
    "/{verification_id}/export",
    summary="Everything held about this user at this client, for the user (PIPL Art. 45; audited)",
    responses=problems("unauthorized", "not_found"),
)
async def export_verification(
    verification_id: str, client: CurrentClient, session: SessionDep
) -> dict[str, Any]:
    verification = await verifications.get_for_client(session, client, verification_id)
    return await export.build(session, verification, actor_type="client", actor_id=client.id)


@router.get(
    "/{verification_id}/consent-receipt",
    response_model=ConsentReceiptOut,
    summary="A receipt of the user's consent, signed by the service (verify with the JWKS)",
    responses=problems("unauthorized", "not_found"),
)
async def consent_receipt(
    verification_id: str, client: CurrentClient, session: SessionDep, runtime: RuntimeDep
) -> ConsentReceiptOut:
    verification = await verifications.get_for_client(session, client, verification_id)
    return ConsentReceiptOut.model_validate(
        await consent.signed_receipt(session, runtime, verification)
    )
