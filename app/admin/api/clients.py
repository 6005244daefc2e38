"""Admin API: clients and their API keys (list, disable, enable, add, revoke, rotate).

Changes need the ``admin`` role and a ``reason_code``; each is audited, and a revoke, rotation
or disable is in force in every process when the answer arrives.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.admin.api.core import AUTH
from app.admin.auth import AnyAdmin, SuperAdmin
from app.deps import RuntimeDep, SessionDep
from app.errors import problems
from app.models import ApiKey
from app.schemas.client_keys import (
    ApiKeyCreated,
    ApiKeyOut,
    ApiKeyRevoked,
    ApiKeyRotated,
    ClientWithKeysOut,
    ReasonCodeIn,
    RotateIn,
)
from app.services import client_keys
from app.services.client_keys import Actor, ClientWithKeys

router = APIRouter(prefix="/v1/admin/clients", tags=["admin"])

CHANGE = {
    **AUTH,
    **problems("not_found", "reason_required", "invalid_reason_code", "service_unavailable"),
}
LAST_KEY_WARNING = "This was the client's last working key: the client can no longer call the API"


def key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        prefix=key.prefix,
        state=client_keys.key_state(key),
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
    )


def client_out(found: ClientWithKeys) -> ClientWithKeysOut:
    return ClientWithKeysOut(**found.client.model_dump(), keys=[key_out(k) for k in found.keys])


def created_out(key: ApiKey, plain: str) -> ApiKeyCreated:
    return ApiKeyCreated(**key_out(key).model_dump(), client_id=key.client_id, api_key=plain)


def admin_actor(admin_id: str) -> Actor:
    return Actor("admin", admin_id)


@router.get(
    "",
    response_model=list[ClientWithKeysOut],
    summary="API clients with their keys' prefixes, states and last use",
    responses=AUTH,
)
async def list_clients(_: AnyAdmin, session: SessionDep) -> list[ClientWithKeysOut]:
    return [client_out(c) for c in await client_keys.list_clients(session)]


@router.get(
    "/{client_id}",
    response_model=ClientWithKeysOut,
    summary="One API client with its keys",
    responses=problems("not_found", "unauthorized", "forbidden"),
)
async def get_client(client_id: str, _: AnyAdmin, session: SessionDep) -> ClientWithKeysOut:
    return client_out(await client_keys.get_client(session, client_id))


async def _set_disabled(
    session: SessionDep, client_id: str, disabled: bool, admin_id: str, reason_code: str
) -> ClientWithKeysOut:
    await client_keys.set_disabled(
        session, client_id, disabled=disabled, actor=admin_actor(admin_id), reason_code=reason_code
    )
    return client_out(await client_keys.get_client(session, client_id))


@router.post(
    "/{client_id}/disable",
    response_model=ClientWithKeysOut,
    summary="Disable a client: every key stops at once, in every process (audited)",
    responses=CHANGE,
)
async def disable(
    client_id: str, body: ReasonCodeIn, ctx: SuperAdmin, session: SessionDep
) -> ClientWithKeysOut:
    return await _set_disabled(session, client_id, True, ctx.admin.id, body.reason_code)


@router.post(
    "/{client_id}/enable",
    response_model=ClientWithKeysOut,
    summary="Enable a disabled client again (audited)",
    responses=CHANGE,
)
async def enable(
    client_id: str, body: ReasonCodeIn, ctx: SuperAdmin, session: SessionDep
) -> ClientWithKeysOut:
    return await _set_disabled(session, client_id, False, ctx.admin.id, body.reason_code)


@router.post(
    "/{client_id}/keys",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Add an API key to a client (the key is shown once; audited)",
    responses=CHANGE,
)
async def add_key(
    client_id: str, body: ReasonCodeIn, ctx: SuperAdmin, session: SessionDep, runtime: RuntimeDep
) -> ApiKeyCreated:
    key, plain = await client_keys.add_key(
        session,
        runtime.master_key,
        client_id,
        actor=admin_actor(ctx.admin.id),
        reason_code=body.reason_code,
    )
    return created_out(key, plain)


@router.post(
    "/{client_id}/keys/{key_id}/revoke",
    response_model=ApiKeyRevoked,
    summary="Revoke an API key now, in every process (audited; the last key stops the client)",
    responses={**CHANGE, **problems("api_key_not_active")},
)
async def revoke_key(
    client_id: str, key_id: str, body: ReasonCodeIn, ctx: SuperAdmin, session: SessionDep
) -> ApiKeyRevoked:
    revoked = await client_keys.revoke_key(
        session,
        key_id,
        client_id=client_id,
        actor=admin_actor(ctx.admin.id),
        reason_code=body.reason_code,
    )
    return ApiKeyRevoked(
        **key_out(revoked.key).model_dump(),
        client_id=revoked.key.client_id,
        usable_keys_left=revoked.usable_keys_left,
        warning=LAST_KEY_WARNING if revoked.usable_keys_left == 0 else None,
    )


@router.post(
    "/{client_id}/keys/{key_id}/rotate",
    status_code=201,
    response_model=ApiKeyRotated,
    summary="Rotate an API key: a new key now, the old one until the overlap ends (audited)",
    responses={**CHANGE, **problems("api_key_not_active")},
)
async def rotate_key(
    client_id: str,
    key_id: str,
    body: RotateIn,
    ctx: SuperAdmin,
    session: SessionDep,
    runtime: RuntimeDep,
) -> ApiKeyRotated:
    overlap = body.overlap_hours
    if overlap is None:
        overlap = runtime.settings.api_key_rotation_overlap_hours
    rotated = await client_keys.rotate_key(
        session,
        runtime.master_key,
        key_id,
        client_id=client_id,
        overlap_hours=overlap,
        actor=admin_actor(ctx.admin.id),
        reason_code=body.reason_code,
    )
    return ApiKeyRotated(
        previous=key_out(rotated.previous), key=created_out(rotated.key, rotated.plain)
    )
