"""Request dependencies, as ``Annotated`` aliases that keep route signatures short."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import session_scope
from app.errors import ProblemError
from app.models import Client
from app.ratelimit import raise_refusal
from app.runtime import Runtime
from app.services import clients


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent."""
    async with session_scope(runtime.sessions) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="API key: `rn_test_…` or `rn_live_…`")


async def get_client(
    session: SessionDep,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Client:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ProblemError(
            "unauthorized", "Send the API key as 'Authorization: Bearer rn_…'", headers=challenge
        )
    client = await clients.authenticate(session, runtime.master_key, credentials.credentials)
    if client is None:
        raise ProblemError("unauthorized", "The API key is not valid", headers=challenge)
    raise_refusal(
        await runtime.limits.hit_client(client.id, client.request_quota_per_minute),
        "This client's request quota is used up",
    )
    return client


CurrentClient = Annotated[Client, Depends(get_client)]
