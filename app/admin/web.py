"""Plumbing of the admin UI: templates, the per-request transaction, cookie sessions, CSRF,
security headers and friendly error pages.

Why a route class rather than the app's handlers: the app answers errors with problem+json and
its middleware is shared with the integrator API. Every ``/admin`` route is built from
:class:`AdminRoute`, which runs the request in one transaction (committed or rolled back *before*
the page is rendered, with the same ``ProblemError(commit=True)`` rule as the API), turns any error
into an HTML page that never echoes what was sent, and puts the security headers on every answer.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db import session_scope
from app.deps import AdminContext, admin_session_of, client_address
from app.errors import ERROR_CODES, ProblemError, is_database_outage, is_input_refusal
from app.hotcache import EpochNotMoved
from app.middleware import _BodyTooLarge
from app.models import Status
from app.services import emergency
from app.services.runtime import Runtime

logger = logging.getLogger("app.admin")

PREFIX = "/admin"
SESSION_COOKIE = "rn_admin_session"
#: The sign-in form's double-submit token (there is no session yet to hold a synchronizer token).
SIGNIN_COOKIE = "rn_admin_signin"

#: The same role rules as the JSON admin API (``app/deps.py``).
READ_ROLES = ("reviewer", "auditor", "admin")
DECIDE_ROLES = ("reviewer", "admin")
OWNER_ROLES = ("admin",)

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

#: Sent by every admin page in prod: browsers then refuse plain http for this host for a year.
HSTS = "max-age=31536000; includeSubDomains"

#: Display order and labels of the statuses (needs_review first: it is what people act on).
STATUS_LABELS: dict[str, str] = {
    Status.NEEDS_REVIEW: "Needs review",
    Status.PENDING: "Pending",
    Status.AWAITING_CODE: "Awaiting code",
    Status.VERIFIED: "Verified",
    Status.REJECTED: "Rejected",
    Status.LOCKED: "Locked",
    Status.EXPIRED: "Expired",
    Status.REVOKED: "Revoked",
    Status.ERASED: "Erased",
}

_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")

HERE = Path(__file__).resolve().parent


# -- templates ---------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _day_time(value: datetime | None) -> str:
    """For table cells whose header already says UTC."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _datum(value: Any) -> str:
    """An audit event's data value, compact: long digests cut (the full one is in the title)."""
    if value is None:
        return "—"
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= 24 else text[:12] + "…"


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _age(value: datetime | None, now: datetime | None = None) -> str:
    """A short, human 'how long ago': 45 s, 12 min, 3 h, 2 d."""
    if value is None:
        return "—"
    seconds = max(0, int(((now or datetime.now(UTC)) - value).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _short_id(value: str) -> str:
    prefix, _, rest = value.partition("_")
    return f"{prefix}_{rest[:8]}…" if len(rest) > 12 else value


templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["when"] = _when
templates.filters["iso"] = _iso
templates.filters["day_time"] = _day_time
templates.filters["datum"] = _datum
templates.filters["age"] = _age
templates.filters["short_id"] = _short_id
templates.globals["STATUS_LABELS"] = STATUS_LABELS
templates.globals["PREFIX"] = PREFIX


@dataclass(frozen=True)
class Viewer:
    """What pages show of the signed-in admin: plain values, safe after a rollback."""

    admin_id: str
    username: str
    role: str
    csrf_token: str
    #: Emergency measures in force, one line each: the banner on every page.
    emergency: tuple[str, ...] = ()

    @property
    def can_decide(self) -> bool:
        return self.role in DECIDE_ROLES

    @property
    def is_owner(self) -> bool:
        return self.role in OWNER_ROLES


def viewer_of(request: Request) -> Viewer | None:
    viewer = getattr(request.state, "viewer", None)
    return viewer if isinstance(viewer, Viewer) else None


def render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    html = templates.get_template(template).render(
        viewer=viewer_of(request), section=context.pop("section", ""), **context
    )
    return HTMLResponse(html, status_code=status_code, headers=dict(headers or {}))


def redirect(path: str) -> RedirectResponse:
    """303 See Other: after a POST, the browser GETs the next page."""
    return RedirectResponse(path, status_code=303)


# -- cookies -----------------------------------------------------------------------------------


def _is_prod(request: Request) -> bool:
    runtime: Runtime = request.app.state.runtime
    return runtime.settings.env == "prod"


def _secure(request: Request) -> bool:
    # Always Secure in prod (TLS ends at a proxy the app may not see); elsewhere whenever the
    # page was served over https, so plain http stays usable on localhost.
    return request.url.scheme == "https" or _is_prod(request)


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path=PREFIX,
        httponly=True,
        secure=_secure(request),
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name, path=PREFIX, httponly=True, secure=_secure(request), samesite="strict"
    )


def signin_token(request: Request) -> str:
    """The sign-in form's double-submit token: the cookie's when it is well formed, else new."""
    current = request.cookies.get(SIGNIN_COOKIE, "")
    return current if _TOKEN_SHAPE.match(current) else secrets.token_urlsafe(32)


def set_signin_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        path=PREFIX,
        httponly=True,
        secure=_secure(request),
        samesite="strict",
    )


def tokens_match(sent: str | None, expected: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens; a missing or empty one never matches."""
    if not sent or not expected:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


# -- the route class: one transaction, HTML errors, security headers ---------------------------


class SignInRequired(Exception):
    """No valid admin session: send the browser to the sign-in page."""

    def __init__(self, *, expired: bool) -> None:
        super().__init__("sign-in required")
        self.expired = expired


class AdminRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                runtime: Runtime = request.app.state.runtime
                async with session_scope(runtime.sessions) as session:
                    request.state.admin_db = session
                    response = await handler(request)
            except Exception as exc:  # every error becomes a page; see error_page
                response = error_page(request, exc)
            response.headers.update(SECURITY_HEADERS)
            if _is_prod(request):
                response.headers["Strict-Transport-Security"] = HSTS
            return response

        return guarded


_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_page(request: Request, exc: Exception) -> Response:
    """A friendly page for ``exc``. Titles and details come from our own code, never from
    what the request carried."""
    if isinstance(exc, SignInRequired):
        response = redirect(f"{PREFIX}/sign-in" + ("?expired=1" if exc.expired else ""))
        clear_cookie(response, request, SESSION_COOKIE)
        return response
    headers: dict[str, str] = {}
    if isinstance(exc, ProblemError):
        code, status, detail = exc.code, exc.status, exc.detail
        if "Retry-After" in exc.headers:
            headers["Retry-After"] = exc.headers["Retry-After"]
    elif isinstance(exc, RequestValidationError | ValidationError) or is_input_refusal(exc):
        code, status = "invalid_request", 422
        detail = "Some values in the address or the form are not valid."
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        code = _HTTP_CODES.get(status, "invalid_request" if status < 500 else "internal_error")
        detail = ERROR_CODES[code][1]
    elif isinstance(exc, _BodyTooLarge):
        code, status = "payload_too_large", 413
        detail = "The form was larger than this service accepts."
    elif isinstance(exc, EpochNotMoved):
        # Committed, but other processes could not be told: the admin retries (idempotent).
        code, status = "service_unavailable", 503
        detail = "Saved, but not every server could be told yet. Submit the form again."
        headers["Retry-After"] = "1"
    elif is_database_outage(exc):
        logger.error("database unavailable", extra={"error_type": type(exc).__name__})
        code, status = "service_unavailable", 503
        detail = "The database cannot be reached just now. Try again in a moment."
        headers["Retry-After"] = "1"
    else:
        # The type only: exception text can carry request values.
        logger.error("admin page error", extra={"error_type": type(exc).__name__})
        code, status = "internal_error", 500
        detail = "Something went wrong on our side. It has been logged; try again."
    title = ERROR_CODES.get(code, ERROR_CODES["invalid_request"])[1]
    return render(
        request,
        "error.html",
        status_code=status,
        headers=headers,
        code=code,
        status=status,
        title=title,
        detail=detail,
        # Pages that fail before the session is read (a 404) still offer the way back in.
        has_session=SESSION_COOKIE in request.cookies,
    )


# -- dependencies --------------------------------------------------------------------------------


def get_db(request: Request) -> AsyncSession:
    """The request's transaction, opened by :class:`AdminRoute`."""
    session = request.state.admin_db
    assert isinstance(session, AsyncSession)
    return session


DB = Annotated[AsyncSession, Depends(get_db)]


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def current_admin(request: Request, db: DB, runtime: RuntimeDep) -> AdminContext:
    """The admin behind the session cookie (same checks as the API's bearer token)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired(expired=False)
    if not _TOKEN_SHAPE.match(token):
        raise SignInRequired(expired=True)
    try:
        admin, session = await admin_session_of(db, runtime, token, client_address(request))
    except ProblemError as exc:
        if exc.code == "rate_limited":
            raise
        raise SignInRequired(expired=True) from None
    banner = tuple(emergency.describe(m) for m in await emergency.in_force(db))
    request.state.viewer = Viewer(admin.id, admin.username, admin.role, session.csrf_token, banner)
    return AdminContext(admin, session)


SignedIn = Annotated[AdminContext, Depends(current_admin)]


def require_role(*roles: str) -> Callable[[AdminContext], Awaitable[AdminContext]]:
    """Let only ``roles`` through (a 403 page otherwise), as ``app.deps.require_role`` does."""

    async def check(ctx: SignedIn) -> AdminContext:
        if ctx.admin.role not in roles:
            raise ProblemError(
                "insufficient_role", f"This needs one of the roles: {', '.join(roles)}."
            )
        return ctx

    return check


Reader = Annotated[AdminContext, Depends(require_role(*READ_ROLES))]
Decider = Annotated[AdminContext, Depends(require_role(*DECIDE_ROLES))]
Owner = Annotated[AdminContext, Depends(require_role(*OWNER_ROLES))]


async def read_form(request: Request) -> dict[str, str]:
    """The posted form's text fields (files are refused; a form here never has any)."""
    form = await request.form(max_files=0, max_fields=32)
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def checked_form(request: Request, ctx: SignedIn) -> dict[str, str]:
    """A signed-in admin's posted form, after the synchronizer-token check (403 otherwise)."""
    fields = await read_form(request)
    if not tokens_match(fields.get("csrf_token"), ctx.session.csrf_token):
        raise ProblemError(
            "csrf_failed", "The form is stale or did not come from this site. Reload the page."
        )
    return fields


CheckedForm = Annotated[dict[str, str], Depends(checked_form)]
