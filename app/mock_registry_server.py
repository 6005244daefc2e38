"""The mock ID registry as a standalone HTTP server.

Integrators point a real deployment at it (``realname mock-registry``, default port 8090, with
the ``http_id_registry`` / ``http_carrier_3e`` verifiers) to rehearse every registry outcome end
to end. It answers exactly as the in-process mock (:func:`app.verifiers.mock_registry.lookup`):
magic names, the known-people fixture, everything else matches.

Protocol
--------
``POST /v1/id-check``, body ``{"real_name": str, "id_number": str}``
``POST /v1/carrier-check``, body ``{"real_name": str, "id_number": str, "phone": str}``
    Response ``{"result": <answer>, "request_id": <uuid>}``:

    * **200** for an answer: ``match``, ``mismatch``, ``not_found``, ``invalid_identity`` and,
      for the carrier check, ``phone_mismatch``;
    * **503** when the registry is ``unavailable`` or in ``maintenance``;
    * **429** when the daily quota is exceeded (``quota_exceeded``);
    * **401** without the right ``Authorization: Bearer <token>``, when a token is configured;
    * **422** for a body that is not of the shape above (the answer never echoes the input).

    An ``Idempotency-Key`` header (at most 255 characters) makes ``request_id`` a UUID derived
    from it, so a retried request gets the same id; without one it is a random UUID4.
``GET /healthz``
    ``{"status": "ok"}``; never requires the token.

The server logs no names, ID numbers or phones: personal data arrives only in request bodies,
which neither it nor uvicorn's access log records.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.verifiers.mock_registry import (
    KnownPerson,
    RegistryAnswer,
    load_people,
    lookup,
    mock_request_id,
)

__all__ = ["DEFAULT_PORT", "create_mock_registry_app", "serve"]

logger = logging.getLogger(__name__)

#: Port of ``realname mock-registry`` unless told otherwise.
DEFAULT_PORT: Final = 8090

_MAX_FIELD_LENGTH: Final = 256
_STATUS_BY_ANSWER: Final[dict[RegistryAnswer, int]] = {
    RegistryAnswer.UNAVAILABLE: status.HTTP_503_SERVICE_UNAVAILABLE,
    RegistryAnswer.MAINTENANCE: status.HTTP_503_SERVICE_UNAVAILABLE,
    RegistryAnswer.QUOTA_EXCEEDED: status.HTTP_429_TOO_MANY_REQUESTS,
}


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


class IdCheckRequest(BaseModel):
    """Two-element check: do the name and the ID number belong together?"""

    model_config = ConfigDict(hide_input_in_errors=True)

    real_name: str = Field(max_length=_MAX_FIELD_LENGTH)
    id_number: str = Field(max_length=_MAX_FIELD_LENGTH)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"


class CarrierCheckRequest(IdCheckRequest):
    """Three-element check: is the phone registered to this name and ID number?"""

    phone: str = Field(max_length=_MAX_FIELD_LENGTH)


class CheckResponse(BaseModel):
    """The registry's answer and the id of this request."""

    result: RegistryAnswer
    request_id: str


def create_mock_registry_app(
    fixture_path: Path | None = None,
    api_token: str | None = None,
    *,
    people: Mapping[str, KnownPerson] | None = None,
) -> FastAPI:
    """Build the mock registry's ASGI app.

    Args:
        fixture_path: An integrator's known-people file extending the default one; when
            ``None``, ``$REALNAME_MOCK_PEOPLE_FILE`` if set
            (see :func:`app.verifiers.mock_registry.load_people`). Read once, here.
        api_token: When given, both check endpoints require ``Authorization: Bearer <token>``.
        people: Already-loaded known people to use instead of reading ``fixture_path``.

    Raises:
        MockPeopleError: the fixture file cannot be used.
        ValueError: ``api_token`` is empty, or both ``fixture_path`` and ``people`` were given.
    """
    if api_token is not None and not api_token:
        raise ValueError("api_token must not be empty; pass None to disable authentication")
    if fixture_path is not None and people is not None:
        raise ValueError("give either fixture_path or people, not both")
    known = people if people is not None else load_people(fixture_path)
    expected = api_token.encode() if api_token is not None else None

    async def require_token(
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        if expected is None:
            return
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), expected
        ):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="a valid bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def answer(
        body: IdCheckRequest, phone: str | None, scope: str, key: str | None
    ) -> JSONResponse:
        result = lookup(body.real_name, body.id_number, phone, known)
        content = CheckResponse(result=result, request_id=mock_request_id(scope, key))
        return JSONResponse(
            content.model_dump(mode="json"),
            status_code=_STATUS_BY_ANSWER.get(result, status.HTTP_200_OK),
        )

    error_responses: dict[int | str, dict[str, object]] = {
        401: {"description": "A bearer token is configured and was not presented."},
        422: {"description": "The body is not of the documented shape."},
        429: {"model": CheckResponse, "description": "quota_exceeded"},
        503: {"model": CheckResponse, "description": "unavailable or maintenance"},
    }
    checks = APIRouter(dependencies=[Depends(require_token)], responses=error_responses)

    @checks.post("/v1/id-check", response_model=CheckResponse)
    async def id_check(
        body: IdCheckRequest, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        """Check that a name and an ID number belong together."""
        return answer(body, None, "id_registry", idempotency_key)

    @checks.post("/v1/carrier-check", response_model=CheckResponse)
    async def carrier_check(
        body: CarrierCheckRequest, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        """Check that a phone is registered to a name and an ID number."""
        return answer(body, body.phone, "carrier_3e", idempotency_key)

    app = FastAPI(
        title="realname mock ID registry",
        summary="Deterministic stand-in for the ID registry and carrier checks; test data only.",
        version="1",
    )
    app.include_router(checks)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness probe; needs no token."""
        return {"status": "ok"}

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes the offending input, which may be personal data.
        fields = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
        return JSONResponse(
            {"detail": "invalid request", "fields": fields},
            status_code=422,
        )

    return app


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    fixture_path: Path | None = None,
    api_token: str | None = None,
) -> None:
    """Run the mock registry with uvicorn until interrupted (``realname mock-registry``).

    Args:
        host: Interface to bind; loopback by default.
        port: TCP port, :data:`DEFAULT_PORT` (8090) by default.
        fixture_path: Extra known-people file, see :func:`create_mock_registry_app`.
        api_token: Shared bearer token to require, if any.

    Raises:
        MockPeopleError: the fixture file cannot be used.
        ValueError: ``api_token`` is empty.
    """
    app = create_mock_registry_app(fixture_path, api_token)
    if api_token is None and not _is_loopback(host):
        logger.warning("mock registry listening beyond loopback without an API token")
    uvicorn.run(app, host=host, port=port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
