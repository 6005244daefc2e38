"""Integrator API: service tokens, introspection (RFC 7662), revocation (RFC 7009), JWKS."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import CurrentClient, RuntimeDep, SessionDep
from app.routers.verifications import problems
from app.schemas.tokens import Introspection, Jwks, TokenIn, TokenOut
from app.services import emergency, keys, tokens, verifications

router = APIRouter(tags=["tokens"])


@router.post(
    "/v1/verifications/{verification_id}/tokens",
    status_code=201,
    response_model=TokenOut,
    summary="Issue a service token for a verified user",
    responses=problems(
        "verification_not_verified", "not_found", "unauthorized", "issuance_suspended"
    ),
)
async def issue_token(
    verification_id: str, client: CurrentClient, session: SessionDep, runtime: RuntimeDep
) -> Any:
    await emergency.ensure_issuing(
        session, client.id, runtime.settings.issuance_retry_after_seconds
    )
    verification = await verifications.get_for_client(session, client, verification_id)
    issued = await tokens.issue(session, runtime, client, verification)
    return TokenOut(
        access_token=issued.token,
        expires_in=issued.expires_in,
        verification_id=verification.id,
        level=verification.level,
    )


@router.post(
    "/v1/tokens/introspect",
    response_model=Introspection,
    response_model_exclude_none=True,
    summary="Is this token active now? (RFC 7662)",
    responses=problems("unauthorized"),
)
async def introspect(
    body: TokenIn, client: CurrentClient, session: SessionDep, runtime: RuntimeDep
) -> Any:
    return await tokens.introspect(session, runtime, client, body.token)


@router.post(
    "/v1/tokens/revoke",
    summary="Revoke one of your tokens (RFC 7009)",
    responses=problems("unauthorized"),
)
async def revoke(
    body: TokenIn, client: CurrentClient, session: SessionDep, runtime: RuntimeDep
) -> dict[str, Any]:
    await tokens.revoke(session, runtime, client, body.token)
    return {}


@router.get(
    "/.well-known/jwks.json", response_model=Jwks, summary="Public keys that sign service tokens"
)
async def jwks(session: SessionDep, runtime: RuntimeDep) -> JSONResponse:
    published = await keys.published(session, runtime.settings.token_ttl_seconds)
    if not published:
        await runtime.keyring.signing_key(session)
        published = await keys.published(session, runtime.settings.token_ttl_seconds)
    return JSONResponse(
        {"keys": [keys.jwk(k) for k in published]}, headers={"Cache-Control": "public, max-age=300"}
    )
