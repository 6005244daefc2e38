"""FastAPI integration: protect a backend route with a service token.

::

    from typing import Annotated

    from fastapi import Depends, FastAPI

    from realname_sdk import Claims, TokenVerifier
    from realname_sdk.fastapi import install_problem_handler, require_verified

    verifier = TokenVerifier(
        "https://realname.example.com/.well-known/jwks.json", audience="cli_123"
    )
    app = FastAPI()
    install_problem_handler(app)  # refusals as application/problem+json

    @app.post("/chat/rooms")
    async def create_room(
        person: Annotated[Claims, Depends(require_verified(verifier, level="L2", adult=True))],
    ) -> dict[str, str]:
        return {"owner": person.sub}

The client sends ``Authorization: Bearer <service token>``. Refusals:

* ``401`` ``invalid_token`` with ``WWW-Authenticate: Bearer error="invalid_token"`` when the token
  is invalid, expired, for another client, or (with ``introspect_with``) no longer active; a
  request without a bearer token gets ``401`` ``token_required`` with a bare ``WWW-Authenticate:
  Bearer`` challenge (RFC 6750 section 3.1: no error code when no credentials were sent);
* ``403`` ``insufficient_level`` / ``adult_required`` / ``minor_required`` when the token is valid
  but does not meet the route's requirement (``WWW-Authenticate: Bearer
  error="insufficient_scope"``);
* ``503`` ``token_check_unavailable`` when the keys or the introspection endpoint cannot be
  reached: the dependency fails closed, never open.

Without :func:`install_problem_handler` the same statuses and headers are sent, with FastAPI's
default ``{"detail": "..."}`` body.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the dependency's annotations at
# runtime.

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from realname_sdk.client import AsyncRealnameClient
from realname_sdk.errors import RealnameError
from realname_sdk.tokens import (
    LEVELS,
    Claims,
    InvalidToken,
    KeySetUnavailable,
    TokenVerifier,
    level_at_least,
)
from realname_sdk.webhooks import DEFAULT_TOLERANCE_SECONDS, Event, InvalidWebhook, verify

__all__ = [
    "PROBLEM_JSON",
    "TokenRejected",
    "install_problem_handler",
    "require_verified",
    "webhook_event",
]

PROBLEM_JSON = "application/problem+json"

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="RealnameServiceToken",
    description="A service token issued by the realname service for a verified person.",
)


class TokenRejected(HTTPException):
    """The request's service token was refused. An :class:`fastapi.HTTPException` carrying an
    RFC 9457 problem document in :attr:`problem` (rendered by :func:`install_problem_handler`).

    Attributes:
        code: The stable problem code (``token_required``, ``invalid_token``,
            ``insufficient_level``, ``adult_required``, ``minor_required``,
            ``token_check_unavailable``).
        problem: The problem document: ``type``, ``title``, ``status``, ``detail``, ``code`` and,
            for ``invalid_token``, the :attr:`~realname_sdk.InvalidToken.reason`.
    """

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.code = code
        self.problem: dict[str, Any] = {
            "type": f"urn:realname:problem:{code}",
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
            **(extra or {}),
        }


async def _render(_: Request, exc: Exception) -> Response:
    if not isinstance(exc, TokenRejected):  # registered for TokenRejected only
        raise exc
    return JSONResponse(
        exc.problem, status_code=exc.status_code, headers=exc.headers, media_type=PROBLEM_JSON
    )


def install_problem_handler(app: FastAPI) -> None:
    """Render :class:`TokenRejected` as ``application/problem+json`` in ``app``."""
    app.add_exception_handler(TokenRejected, _render)


def _missing() -> TokenRejected:
    return TokenRejected(
        401,
        "token_required",
        "A service token is required",
        "Send the service token as 'Authorization: Bearer <token>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _invalid(reason: str) -> TokenRejected:
    return TokenRejected(
        401,
        "invalid_token",
        "The service token is not valid",
        f"The service token was refused: {reason}",
        headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{reason}"'},
        extra={"reason": reason},
    )


def _forbidden(code: str, title: str, detail: str, **extra: Any) -> TokenRejected:
    return TokenRejected(
        403,
        code,
        title,
        detail,
        headers={
            "WWW-Authenticate": f'Bearer error="insufficient_scope", error_description="{code}"'
        },
        extra=extra,
    )


def _unavailable(what: str) -> TokenRejected:
    return TokenRejected(
        503,
        "token_check_unavailable",
        "The service token cannot be checked right now",
        f"The {what} could not be reached; try again shortly",
    )


def require_verified(
    verifier: TokenVerifier,
    *,
    level: str = "L2",
    adult: bool | None = None,
    introspect_with: AsyncRealnameClient | None = None,
) -> Callable[..., Awaitable[Claims]]:
    """A FastAPI dependency that admits only requests carrying a suitable service token.

    Args:
        verifier: Checks the token offline (signature, expiry, audience, issuer).
        level: The lowest verification level admitted (``"L1"``, ``"L2"``, ``"L3"``).
        adult: ``True`` admits only adults, ``False`` only minors, ``None`` both. A token that
            does not state adulthood meets neither ``True`` nor ``False``.
        introspect_with: When given, each token that passes the offline check is also
            introspected with this client, so a revocation (admin action, erasure) takes effect
            at once instead of at expiry. Costs one call to the service per request.

    Returns:
        An async dependency returning the token's :class:`~realname_sdk.Claims`; use it as
        ``Annotated[Claims, Depends(require_verified(verifier))]``.

    Raises:
        ValueError: ``level`` is not a known level.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")

    async def verified_person(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Claims:
        if credentials is None or not credentials.credentials:
            raise _missing()
        token = credentials.credentials
        try:
            claims = await verifier.averify(token)
        except InvalidToken as exc:
            raise _invalid(exc.reason) from None
        except KeySetUnavailable:
            raise _unavailable("signing key set") from None
        if introspect_with is not None:
            try:
                status = await introspect_with.introspect(token)
            except (RealnameError, httpx.HTTPError):
                raise _unavailable("introspection endpoint") from None
            if not status.active:
                raise _invalid("inactive")
        if not level_at_least(claims, level):
            raise _forbidden(
                "insufficient_level",
                "The verification level is too low",
                f"This requires level {level} or above",
                required_level=level,
            )
        if adult is True and claims.adult is not True:
            raise _forbidden(
                "adult_required", "Only adults may do this", "This requires an adult (18 or older)"
            )
        if adult is False and claims.adult is not False:
            raise _forbidden("minor_required", "Only minors may do this", "This requires a minor")
        return claims

    return verified_person


def webhook_event(
    secret: str | Sequence[str], *, tolerance: int = DEFAULT_TOLERANCE_SECONDS
) -> Callable[[Request], Awaitable[Event]]:
    """A dependency that verifies the request as a webhook delivery and returns its event;
    anything unverifiable is answered ``400`` (the service retries genuine deliveries)::

        @app.post("/hooks/realname", status_code=204)
        async def hook(event: Annotated[Event, Depends(webhook_event("whsec_..."))]) -> None:
            ...

    Args:
        secret: The endpoint's ``whsec_…`` secret (or several, while rotating).
        tolerance: Largest accepted clock difference in seconds.
    """

    async def dependency(request: Request) -> Event:
        body = await request.body()
        try:
            return verify(body, dict(request.headers), secret, tolerance=tolerance)
        except InvalidWebhook as exc:
            raise HTTPException(status_code=400, detail=exc.reason) from None

    return dependency
