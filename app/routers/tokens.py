"""Integrator API: service tokens, introspection (RFC 7662), revocation (RFC 7009), JWKS."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.batching import GroupCommit
from app.db import LazySession
from app.deps import (
    CLIENT_SECURITY,
    CurrentClient,
    RuntimeDep,
    SessionDep,
    client_of,
    committed,
    request_session,
)
from app.errors import ProblemError, problems
from app.logging import request_id_var
from app.models import Client
from app.routers.idempotency import KeyHeader, answer_for_client, idempotent
from app.routers.params import json_body
from app.schemas.tokens import Introspection, Jwks, TokenIn, TokenOut
from app.services import keys, tokens
from app.services.runtime import Runtime

#: The token path: introspection, revocation and the JWKS (what a ``tokens`` process serves).
router = APIRouter(tags=["tokens"])
#: Issuing a token for a verified verification (the whole API only).
issuance = APIRouter(tags=["tokens"])

FORM = "application/x-www-form-urlencoded"
#: As many fields as Starlette's form parser accepts.
MAX_FORM_FIELDS = 1000
#: The routes that take RFC 6749 form bodies (the middleware lets that media type through).
FORM_PATHS = frozenset({"/v1/tokens/introspect", "/v1/tokens/revoke"})
_TOKEN_FORM_SCHEMA = TokenIn.model_json_schema()
_TOKEN_FORM_SCHEMA["additionalProperties"] = True  # RFC 6749 section 3.2: unknown ones ignored
TOKEN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            FORM: {"schema": _TOKEN_FORM_SCHEMA},
            "application/json": {"schema": TokenIn.model_json_schema()},
        },
    }
}


def _form_problem(detail: str, errors: list[dict[str, str]] | None = None) -> ProblemError:
    """RFC 6749 section 5.2 ``invalid_request`` (400), as problem+json with the RFC's member."""
    extra: dict[str, Any] = {"error": "invalid_request", "error_description": detail}
    if errors:
        extra["errors"] = errors
    return ProblemError("invalid_request", detail, status=400, extra=extra)


async def token_request(request: Request) -> TokenIn:
    """The token of an introspection or revocation request: an RFC form body (``token``,
    ``token_type_hint``; other fields ignored, none repeated) or, as before, a JSON object."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == FORM:
        # Kept on the request: the Idempotency-Key check reads it too. Parsed as Starlette's
        # form parser would (names and values decoded from Latin-1, then percent-decoded as
        # UTF-8), without its streaming parser: these bodies are a few hundred bytes.
        raw = (await request.body()).decode("latin-1")
        try:
            pairs = parse_qsl(raw, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except ValueError:
            raise _form_problem(f"More than {MAX_FORM_FIELDS} form fields") from None
        fields: dict[str, Any] = {}
        for name in ("token", "token_type_hint"):
            values = [value for key, value in pairs if key == name]
            if len(values) > 1:
                raise _form_problem(f"'{name}' must not be repeated")
            if values:
                fields[name] = values[0]
        try:
            return TokenIn.model_validate(fields)
        except ValidationError as exc:
            errors = [
                {
                    "pointer": "/" + "/".join(str(p) for p in e["loc"]),
                    "code": "invalid_request",
                    "detail": e["msg"],
                }
                for e in exc.errors()
            ]
            detail = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors)
            raise _form_problem(detail, errors) from None
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ProblemError("unsupported_media_type", f"Send the token as {FORM} (or JSON)")
    return await json_body(request, TokenIn)


TokenRequest = Annotated[TokenIn, Depends(token_request)]


@issuance.post(
    "/v1/verifications/{verification_id}/tokens",
    status_code=201,
    response_model=TokenOut,
    summary="Issue a service token for a verified user",
    responses=problems(
        "verification_not_verified", "not_found", "unauthorized", "issuance_suspended"
    ),
    openapi_extra={"security": CLIENT_SECURITY},
)
async def issue_token(
    verification_id: str, request: Request, idempotency_key: KeyHeader = None
) -> Response:
    if idempotency_key is None:
        # Concurrent issues share a transaction (a group commit): the key is authenticated
        # here, the token signed and written with the others that arrived meanwhile.
        runtime: Runtime = request.app.state.runtime
        async with LazySession.scope(runtime.sessions) as lazy:  # opened only on a cache miss
            client = await client_of(request, runtime, lazy)
        asked = tokens.IssueRequest(client, verification_id, request_id_var.get())
        issued = await _issues(request, runtime).submit(asked)
        committed(request)
        return _token_answer(issued)

    async def issue(client: Client, session: AsyncSession, runtime: Runtime) -> Response:
        return _token_answer(await tokens.issue(session, runtime, client, verification_id))

    return await answer_for_client(request, idempotency_key, issue)


def _issues(request: Request, runtime: Runtime) -> GroupCommit[tokens.IssueRequest, tokens.Issued]:
    """This app's group commit of token issues (made on first use)."""
    group: GroupCommit[tokens.IssueRequest, tokens.Issued] | None = getattr(
        request.app.state, "token_issues", None
    )
    if group is None:
        group = GroupCommit(lambda asked: tokens.issue_batch(runtime, asked))
        request.app.state.token_issues = group
    return group


def _token_answer(issued: tokens.Issued) -> Response:
    answer = TokenOut(
        access_token=issued.token,
        expires_in=issued.expires_in,
        verification_id=issued.verification_id,
        level=issued.level,
    )
    return Response(answer.model_dump_json(), 201, media_type="application/json")


@router.post(
    "/v1/tokens/introspect",
    response_model=Introspection,
    response_model_exclude_none=True,
    summary="Is this token active now? (RFC 7662)",
    responses=problems("unauthorized", "invalid_client"),
    openapi_extra={**TOKEN_BODY, "security": CLIENT_SECURITY},
)
async def introspect(request: Request) -> Response:
    # The token path's hottest route resolves no FastAPI dependencies: the same steps as
    # `body: TokenRequest, client: CurrentClient, session: LazySessionDep` (in that order), as
    # plain calls, and the answer serialised by its model directly. What OpenAPI says of the
    # body and the authentication is declared above.
    runtime: Runtime = request.app.state.runtime
    async with request_session(runtime, request) as session:
        body = await token_request(request)
        client = await client_of(request, runtime, session)
        answer = await tokens.introspect(session, runtime, client, body.token)
    return Response(
        Introspection.model_validate(answer).model_dump_json(exclude_none=True),
        media_type="application/json",
    )


@router.post(
    "/v1/tokens/revoke",
    summary="Revoke one of your tokens (RFC 7009)",
    responses=problems("unauthorized", "invalid_client"),
    openapi_extra=TOKEN_BODY,
)
@idempotent
async def revoke(
    body: TokenRequest, client: CurrentClient, session: SessionDep, runtime: RuntimeDep
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
