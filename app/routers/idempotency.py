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

A route whose work starts with checks and slow preparation that should not hold the key's
claim (``POST /v1/verifications``: the suspension check, the identity hash) names them with
``prepare=``, and what makes two of its requests the same with ``fingerprint=``::

    @idempotent(fingerprint=same_thing, prepare=prepare_thing, resource_of=lambda out: out.id)
    async def create_thing(body: ThingIn, ..., prepared: Prepared) -> ThingOut:
        ...

The order is then: the fingerprint, a look for a stored answer (a read), ``prepare``, the
claim, the route, the stored answer.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, TypeVar, get_type_hints, overload
from urllib.parse import parse_qsl

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import CurrentClient, RuntimeDep, SessionDep, client_of, request_session
from app.errors import PROBLEM_JSON, ProblemError, problem_response
from app.models import Client
from app.services import idempotency
from app.services.runtime import Runtime

HEADER = "Idempotency-Key"
REPLAYED = {"Idempotent-Replayed": "true"}

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


#: The endpoint's arguments -> what makes two requests "the same" (keyed-hashed, never stored).
Fingerprint = Callable[..., Any]
#: The endpoint's arguments -> what the endpoint gets as ``prepared``.
Prepare = Callable[..., Awaitable[Any]]
#: The endpoint's answer -> the verification it is about (erasing that drops the stored answer).
ResourceOf = Callable[[Any], str | None]


@dataclass(frozen=True)
class Keyed:
    """The request's ``Idempotency-Key`` (``key`` None: none was sent) and what claiming it
    needs."""

    key: str | None
    client_id: str
    request: Request
    session: AsyncSession
    runtime: Runtime

    async def request_hash(self, value: Any | None) -> str:
        """The keyed hash of the request: the route and ``value``, or by default the path
        parameters, the query and the body."""
        request = self.request
        if value is None:
            value = [
                sorted(request.path_params.items()),
                sorted(request.query_params.multi_items()),
                _canonical_body(await request.body(), request.headers.get("content-type", "")),
            ]
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        return idempotency.fingerprint(self.runtime.master_key, request.method, path, value)

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.runtime.settings.idempotency_ttl_seconds)


def replay(stored: idempotency.Stored) -> Response:
    """The stored answer again, marked ``Idempotent-Replayed``."""
    status, body = stored.status_code, stored.body
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


#: The ``Idempotency-Key`` header as a route parameter (what OpenAPI says of it), for a route
#: that calls :func:`answer_once` itself instead of taking the decorator.
KeyHeader = Annotated[
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
]


def keyed_request(
    idempotency_key: str | None,
    client_id: str,
    request: Request,
    session: AsyncSession,
    runtime: Runtime,
) -> Keyed:
    """The request's ``Idempotency-Key``, checked (none: nothing to claim)."""
    key = None if idempotency_key is None else idempotency.check_key(idempotency_key)
    return Keyed(key, client_id, request, session, runtime)


async def keyed(
    request: Request,
    client: CurrentClient,
    session: SessionDep,
    runtime: RuntimeDep,
    idempotency_key: KeyHeader = None,
) -> Keyed:
    """:func:`keyed_request` as the decorator's dependency."""
    return keyed_request(idempotency_key, client.id, request, session, runtime)


async def answer_once(
    key: Keyed,
    run: Callable[[], Awaitable[Any]],
    *,
    request_hash: str | None = None,
    resource_of: ResourceOf | None = None,
) -> Any:
    """Run the route (``run``) under ``key``: claim the key, run, store the answer with the
    route's writes; or replay the answer stored by an earlier request with the same key.
    ``request_hash``: :meth:`Keyed.request_hash` when the caller has it already."""
    if key.key is None:
        return await run()
    session, runtime = key.session, key.runtime
    if request_hash is None:
        request_hash = await key.request_hash(None)
    row, stored = await idempotency.claim(
        session, key.client_id, key.key, request_hash, key.ttl, runtime.master_key
    )
    if stored is not None:
        return replay(stored)
    assert row is not None
    try:
        result = await run()
    except ProblemError as exc:
        if exc.commit:
            # The transaction keeps the route's writes: keep the answer with them.
            problem = problem_response(exc.code, exc.detail, status=exc.status, extra=exc.extra)
            await idempotency.complete(
                session,
                row,
                exc.status,
                json.loads(bytes(problem.body)),
                resource_id=_path_resource(key),
                master_key=runtime.master_key,
            )
        raise
    route = key.request.scope.get("route")
    status, body = _answer_of(result, getattr(route, "status_code", None) or 200)
    await idempotency.complete(
        session,
        row,
        status,
        body,
        resource_id=_path_resource(key) if resource_of is None else resource_of(result),
        master_key=runtime.master_key,
    )
    return result


#: A lean route's work: given the client, the request's transaction and the runtime, the answer.
ClientWork = Callable[[Client, AsyncSession, Runtime], Awaitable[Response]]


async def answer_for_client(
    request: Request, idempotency_key: str | None, work: ClientWork
) -> Response:
    """A route's ``client: CurrentClient, session: SessionDep, runtime: RuntimeDep`` and
    ``@idempotent`` as plain calls, for the hottest integrator routes (a profile of the token
    issue put a tenth of its server CPU in solving those dependencies): authenticate the API
    key, then run ``work``
    under the ``Idempotency-Key`` in one transaction, committed before the answer is sent. The
    route declares ``openapi_extra={"security": CLIENT_SECURITY}`` and a :data:`KeyHeader`
    parameter, so that OpenAPI says what the dependencies would have said."""
    runtime: Runtime = request.app.state.runtime
    async with request_session(runtime, request) as lazy:
        client = await client_of(request, runtime, lazy)
        session = await lazy()
        key = keyed_request(idempotency_key, client.id, request, session, runtime)
        answer: Response = await answer_once(key, lambda: work(client, session, runtime))
    return answer


def _answer_of(result: Any, default_status: int) -> tuple[int, Any]:
    if isinstance(result, Response):
        return result.status_code, json.loads(bytes(result.body)) if result.body else None
    return default_status, jsonable_encoder(result)


def _path_resource(keyed: Keyed) -> str | None:
    """The verification in the route's path, if any."""
    resource: str | None = keyed.request.path_params.get("verification_id")
    return resource


@overload
def idempotent(endpoint: F, /) -> F: ...


@overload
def idempotent(
    *,
    fingerprint: Fingerprint | None = None,
    prepare: Prepare | None = None,
    resource_of: ResourceOf | None = None,
) -> Callable[[F], F]: ...


def idempotent(
    endpoint: F | None = None,
    /,
    *,
    fingerprint: Fingerprint | None = None,
    prepare: Prepare | None = None,
    resource_of: ResourceOf | None = None,
) -> F | Callable[[F], F]:
    """Make a POST route honour ``Idempotency-Key`` (see the module's docstring).

    - ``fingerprint``: called with the route's arguments, what makes two requests the same
      (by default the path parameters, the query and the body as sent);
    - ``prepare``: called with the route's arguments before the key is claimed (and, with a key,
      only when no stored answer is to be replayed): checks and slow work that must not hold the
      claim; the route gets its result as its ``prepared`` argument;
    - ``resource_of``: the verification the answer is about (by default the path's
      ``verification_id``): erasing it drops the stored answer.
    """
    if endpoint is None:
        return lambda route: _idempotent(route, fingerprint, prepare, resource_of)
    return _idempotent(endpoint, fingerprint, prepare, resource_of)


def _idempotent(
    endpoint: F,
    fingerprint: Fingerprint | None,
    prepare: Prepare | None,
    resource_of: ResourceOf | None,
) -> F:
    hints = get_type_hints(endpoint, include_extras=True)
    signature = inspect.signature(endpoint)
    parameters = [
        p.replace(annotation=hints.get(name, p.annotation))
        for name, p in signature.parameters.items()
        # ``prepared`` comes from ``prepare``, not from the request.
        if not (prepare is not None and name == "prepared")
    ]
    extra = inspect.Parameter(
        "_idempotency", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Keyed, Depends(keyed)]
    )

    async def with_prepared(kwargs: dict[str, Any]) -> dict[str, Any]:
        if prepare is None:
            return kwargs
        return {**kwargs, "prepared": await prepare(**kwargs)}

    @functools.wraps(endpoint)
    async def wrapper(*, _idempotency: Keyed, **kwargs: Any) -> Any:
        key = _idempotency
        if key.key is None:
            return await endpoint(**await with_prepared(kwargs))
        session, runtime = key.session, key.runtime
        request_hash = await key.request_hash(
            fingerprint(**kwargs) if fingerprint is not None else None
        )
        if prepare is not None:
            # A replay needs no preparation: look first (a read), prepare, then claim.
            stored = await idempotency.lookup(
                session, key.client_id, key.key, request_hash, key.ttl, runtime.master_key
            )
            if stored is not None:
                return replay(stored)
            kwargs = await with_prepared(kwargs)
        return await answer_once(
            key, lambda: endpoint(**kwargs), request_hash=request_hash, resource_of=resource_of
        )

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            *[p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD],
            extra,
        ],
        return_annotation=hints.get("return", signature.return_annotation),
    )
    return wrapper  # type: ignore[return-value]
