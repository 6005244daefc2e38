"""Request dependencies, as ``Annotated`` aliases that keep route signatures short."""

from __future__ import annotations

import base64
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from urllib.parse import unquote_plus

from fastapi import Depends, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from app import faults
from app.db import LazySession
from app.errors import ProblemError
from app.models import Client
from app.ratelimit import raise_refusal
from app.services import clients
from app.services.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:  # async: no thread-pool hop per request
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def admit_registration(runtime: RuntimeDep) -> AsyncIterator[None]:
    """Admission control (``app.admission``): hold one of this process's places for
    registrations until the answer is sent, or refuse at once with 503 ``overloaded`` and
    ``Retry-After`` when none is free. A route dependency, so it runs before authentication,
    body validation, the idempotency claim and any database work: a refused request has stored
    nothing, and its retry (with the same ``Idempotency-Key``) is a first attempt."""
    gate = runtime.registrations
    if not gate.try_enter():
        raise ProblemError(
            "overloaded",
            "Too many registrations in progress; retry after the time in Retry-After",
            headers={"Retry-After": str(gate.retry_after)},
        )
    try:
        yield
    finally:
        gate.leave()


AdmitRegistration = Depends(admit_registration)


@asynccontextmanager
async def request_session(runtime: Runtime, request: Request) -> AsyncIterator[LazySession]:
    """At most one transaction per request, begun when first needed (a request answered from
    memory checks out no connection) and committed when the block ends."""
    async with LazySession.scope(runtime.sessions) as lazy:
        yield lazy
    if lazy.opened:
        committed(request)


def committed(request: Request) -> None:
    """The request's writes have committed; its answer is not sent yet (a fault point)."""
    route = request.scope.get("route")
    faults.reached(f"committed {request.method} {getattr(route, 'path', request.url.path)}")


async def get_lazy_session(runtime: RuntimeDep, request: Request) -> AsyncIterator[LazySession]:
    """The request's :func:`request_session`, committed before the response is sent."""
    async with request_session(runtime, request) as lazy:
        yield lazy


LazySessionDep = Annotated[LazySession, Depends(get_lazy_session, scope="function")]


async def get_session(lazy: LazySessionDep) -> AsyncSession:
    """The request's transaction (see :func:`get_lazy_session`), begun now."""
    return await lazy()


SessionDep = Annotated[AsyncSession, Depends(get_session)]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="The client's API key: `Authorization: Bearer rn_test_…` (or `rn_live_…`)",
)
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="realname"'}


def invalid_client(detail: str) -> ProblemError:
    """RFC 6749 section 5.2: 401 ``invalid_client`` with a challenge for the scheme used."""
    return ProblemError(
        "invalid_client", detail, headers=BASIC_CHALLENGE, extra={"error": "invalid_client"}
    )


class ClientBasic(HTTPBasic):
    """RFC 6749 section 2.3.1 client authentication: ``Basic base64(client_id:api_key)``, each
    part form-urlencoded first. None when the request does not use Basic."""

    async def __call__(self, request: HTTPConnection) -> HTTPBasicCredentials | None:  # type: ignore[override]
        scheme, param = get_authorization_scheme_param(request.headers.get("Authorization"))
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(param, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise invalid_client(
                "The Basic credentials are not base64 of 'client_id:api_key'"
            ) from None
        client_id, separator, api_key = decoded.partition(":")
        if not separator:
            raise invalid_client("The Basic credentials are not base64 of 'client_id:api_key'")
        return HTTPBasicCredentials(
            username=unquote_plus(client_id), password=unquote_plus(api_key)
        )


_basic = ClientBasic(
    auto_error=False,
    scheme_name="ClientBasic",
    realm="realname",
    description="RFC 6749 client authentication: user name = client id (`cli_…`), "
    "password = API key",
)


def client_address(request: Request) -> str:
    """The caller's address (behind proxies: as uvicorn's FORWARDED_ALLOW_IPS lets it see it)."""
    return request.client.host if request.client else "unknown"


async def refuse_guessers(runtime: Runtime, address: str) -> None:
    """429 while ``address`` has failed to authenticate too often: checked in the limits'
    storage before any database read, so guessing costs the database nothing."""
    raise_refusal(
        await runtime.limits.auth_refused(address),
        "Too many failed authentications from this address",
        limit="auth_failures",
    )


async def get_client(
    session: LazySessionDep,
    runtime: RuntimeDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> Client:
    """The client the request's API key (Bearer, or RFC 6749 Basic) belongs to."""
    return await _authenticate(session, runtime, request, credentials, basic)


#: What :func:`get_client` declares in OpenAPI, for routes that call :func:`client_of`.
CLIENT_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"ClientBasic": []}]


async def client_of(request: Request, runtime: Runtime, session: LazySession) -> Client:
    """:func:`get_client` as a plain call, for a route that resolves no dependencies (the
    token path's hottest: each dependency FastAPI solves costs more than the lookup)."""
    return await _authenticate(
        session, runtime, request, await _bearer(request), await _basic(request)
    )


async def _authenticate(
    session: LazySession,
    runtime: Runtime,
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    basic: HTTPBasicCredentials | None,
) -> Client:
    challenge = {"WWW-Authenticate": 'Bearer, Basic realm="realname"'}
    if credentials is not None:
        api_key, claimed_id = credentials.credentials, None
    elif basic is not None:
        api_key, claimed_id = basic.password, basic.username
    else:
        raise ProblemError(
            "unauthorized", "Send the API key as 'Authorization: Bearer rn_…'", headers=challenge
        )
    address = client_address(request)
    used: list[str] = []
    client = await clients.authenticate(
        session,
        runtime.master_key,
        api_key,
        runtime.api_keys,
        used.append,
        before_lookup=lambda: refuse_guessers(runtime, address),
    )
    if used and runtime.key_last_use.get(used[0]) is None:
        # At most every few minutes per process and key: a write per request would cost more
        # than the request. Part of the request's transaction (an error answer loses it).
        runtime.key_last_use.put(used[0], True)
        await clients.note_use(await session(), used[0])
    if claimed_id is not None and (
        client is None or not hmac.compare_digest(claimed_id.encode(), client.id.encode())
    ):
        await runtime.limits.record_auth_failure(address)
        raise invalid_client("The client id and API key do not match an active client")
    if client is None:
        await runtime.limits.record_auth_failure(address)
        raise ProblemError(
            "unauthorized", "The API key is not valid", headers={"WWW-Authenticate": "Bearer"}
        )
    raise_refusal(
        await runtime.limits.hit_client(client.id, client.request_quota_per_minute),
        "This client's request quota is used up",
        limit="client_quota",
    )
    return client


CurrentClient = Annotated[Client, Depends(get_client)]
