"""``Idempotency-Key`` for any integrator POST: one decorator, the semantics of
``POST /v1/verifications``.

A retry with the same key and the same request (method, route, path parameters, query and body)
within 24 hours gets the first answer again, marked ``Idempotent-Replayed: true``, without the
work being done twice (no second SMS, the same token); the same key with another request is 422
``idempotency_conflict``. Keys are per client. Problems the route raises are stored too when
their transaction commits (a counted code attempt), so a retry does not count again.

Adopting it on a route::

    @router.post("/v1/things", status_code=201, ...)
    @idempotent
    async def create_thing(body: ThingIn, client: CurrentClient, session: SessionDep) -> Any:
        ...

The route must take the API client (``CurrentClient``); the decorator adds the optional
``Idempotency-Key`` header to its signature, hence to the OpenAPI document, where
``app.errors.document_problems`` adds the idempotency problems to every operation that has it.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, TypeVar, get_type_hints
from urllib.parse import parse_qsl

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from app.deps import CurrentClient, RuntimeDep, SessionDep
from app.errors import PROBLEM_JSON, ProblemError, problem_response
from app.models import IdempotencyKey
from app.services import idempotency

HEADER = "Idempotency-Key"
REPLAYED = {"Idempotent-Replayed": "true"}

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass
class Claim:
    """The request's hold on its key: ``stored`` to replay, or ``row`` to complete."""

    row: IdempotencyKey | None = None
    stored: idempotency.Stored | None = None
    master_key: bytes = b""
    resource_id: str | None = None

    def replay(self) -> Response:
        assert self.stored is not None
        status, body = self.stored.status_code, self.stored.body
        media = PROBLEM_JSON if status >= 400 else "application/json"
        return JSONResponse(body, status_code=status, headers=REPLAYED, media_type=media)


def _canonical_body(raw: bytes, content_type: str) -> Any:
    """The body as compared: JSON by value (key order and spacing do not matter), a form by its
    sorted fields, anything else by its bytes."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return sorted(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("latin-1")


async def claim_key(
    request: Request,
    client: CurrentClient,
    session: SessionDep,
    runtime: RuntimeDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Any unique string (1-255 printable ASCII characters): a retry with the "
            "same key and request within 24 h gets the first answer again "
            "(`Idempotent-Replayed: true`) instead of doing the work twice; the same key with "
            "another request is 422 `idempotency_conflict`.",
            json_schema_extra={
                "minLength": 1,
                "maxLength": 255,
                "pattern": idempotency.KEY_PATTERN,
            },
        ),
    ] = None,
) -> Claim:
    """Claim the request's ``Idempotency-Key`` in the request's transaction (none: no claim)."""
    if idempotency_key is None:
        return Claim()
    key = idempotency.check_key(idempotency_key)
    route = request.scope.get("route")
    request_hash = idempotency.fingerprint(
        runtime.master_key,
        request.method,
        getattr(route, "path", request.url.path),
        [
            sorted(request.path_params.items()),
            sorted(request.query_params.multi_items()),
            _canonical_body(await request.body(), request.headers.get("content-type", "")),
        ],
    )
    ttl = timedelta(seconds=runtime.settings.idempotency_ttl_seconds)
    row, stored = await idempotency.claim(
        session, client.id, key, request_hash, ttl, runtime.master_key
    )
    resource_id = request.path_params.get("verification_id")
    return Claim(row, stored, runtime.master_key, resource_id)


async def _complete(session: Any, claim: Claim, status: int, body: Any) -> None:
    assert claim.row is not None
    await idempotency.complete(
        session,
        claim.row,
        status,
        body,
        resource_id=claim.resource_id,
        master_key=claim.master_key,
    )


def _answer_of(result: Any, default_status: int) -> tuple[int, Any]:
    if isinstance(result, Response):
        return result.status_code, json.loads(bytes(result.body)) if result.body else None
    return default_status, jsonable_encoder(result)


def idempotent(endpoint: F) -> F:
    """Make a POST route honour ``Idempotency-Key`` (see the module's docstring)."""
    hints = get_type_hints(endpoint, include_extras=True)
    signature = inspect.signature(endpoint)
    parameters = [
        p.replace(annotation=hints.get(name, p.annotation))
        for name, p in signature.parameters.items()
    ]
    extra = [
        inspect.Parameter(
            "_idempotency_claim",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[Claim, Depends(claim_key)],
        ),
        inspect.Parameter(
            "_idempotency_session", inspect.Parameter.KEYWORD_ONLY, annotation=SessionDep
        ),
        inspect.Parameter(
            "_idempotency_request", inspect.Parameter.KEYWORD_ONLY, annotation=Request
        ),
    ]

    @functools.wraps(endpoint)
    async def wrapper(
        *args: Any,
        _idempotency_claim: Claim,
        _idempotency_session: Any,
        _idempotency_request: Request,
        **kwargs: Any,
    ) -> Any:
        claim = _idempotency_claim
        if claim.stored is not None:
            return claim.replay()
        route = _idempotency_request.scope.get("route")
        default_status = getattr(route, "status_code", None) or 200
        try:
            result = await endpoint(*args, **kwargs)
        except ProblemError as exc:
            if claim.row is not None and exc.commit:
                # The transaction keeps the route's writes: keep the answer with them.
                problem = problem_response(exc.code, exc.detail, status=exc.status, extra=exc.extra)
                await _complete(
                    _idempotency_session, claim, exc.status, json.loads(bytes(problem.body))
                )
            raise
        if claim.row is not None:
            status, body = _answer_of(result, default_status)
            await _complete(_idempotency_session, claim, status, body)
        return result

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            *[p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD],
            *extra,
        ],
        return_annotation=hints.get("return", signature.return_annotation),
    )
    return wrapper  # type: ignore[return-value]
