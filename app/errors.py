"""One exception base for every client-facing error, rendered as RFC 9457 problem+json.

Every error carries a stable ``code`` that integrators can branch on; the table of codes lives in
``ERROR_CODES`` and in the README. Error bodies never echo request values: they name the field
and the rule, never what was sent.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.hotcache import EpochNotMoved

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "/problems/"

#: code -> (HTTP status, title). The stable vocabulary of the API.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_request": (422, "The request is not valid"),
    "malformed_json": (400, "The request body is not valid JSON"),
    "unknown_field": (422, "The request has a field this endpoint does not take"),
    "invalid_real_name": (422, "The real name is not valid"),
    "invalid_id_number": (422, "The resident ID number is not valid"),
    "invalid_phone": (422, "The phone number is not a mainland China mobile number"),
    "invalid_external_user_id": (422, "The external user id is not valid"),
    "unsupported_id_type": (422, "This identity document type is not supported"),
    "network_identity_not_enabled": (
        422,
        "Network identity verification is not enabled for live clients of this service",
    ),
    "network_identity_mode_too_weak": (
        422,
        "The network identity mode does not reach the level asked for",
    ),
    "consent_required": (422, "Consent to a published collection-rules version is required"),
    "level_too_low": (422, "The level is below the client's policy"),
    "unauthorized": (401, "A valid API key is required"),
    "invalid_client": (401, "The client id and API key do not match an active client"),
    "forbidden": (403, "This key may not do that"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "unsupported_media_type": (415, "The request body must be application/json"),
    "payload_too_large": (413, "The request body is too large"),
    "idempotency_conflict": (422, "The Idempotency-Key was used with a different request"),
    "idempotency_in_progress": (409, "A request with this Idempotency-Key is still in progress"),
    "invalid_idempotency_key": (400, "The Idempotency-Key header is not valid"),
    "identity_in_use": (409, "This person is already registered to another user of this client"),
    "rate_limited": (429, "Too many requests"),
    "code_incorrect": (422, "The code is not correct"),
    "code_expired": (422, "The code has expired"),
    "attempts_exhausted": (422, "No attempts are left for this verification"),
    "invalid_code_format": (422, "The code must be six ASCII digits"),
    "verification_not_awaiting_code": (409, "The verification is not waiting for a code"),
    "verification_not_verified": (409, "The verification is not verified"),
    "verification_expired": (409, "The verification has expired; start a new one"),
    "verification_locked": (409, "The verification is locked after too many attempts"),
    "sandbox_only": (403, "This endpoint is only available to test-mode keys"),
    "invalid_credentials": (401, "The username, password or one-time code is not correct"),
    "session_expired": (401, "The admin session has ended; sign in again"),
    "insufficient_role": (403, "Your role may not do this"),
    "bulk_access_blocked": (429, "Too many personal records opened; access paused and reported"),
    "reason_required": (422, "A reason is required"),
    "invalid_transition": (409, "The verification is not in a state that allows this"),
    "api_key_not_active": (409, "The API key is already revoked or expired"),
    "csrf_failed": (403, "The form is stale or did not come from this site; reload and retry"),
    "invalid_webhook_url": (422, "The webhook URL is not a usable absolute http(s) URL"),
    "webhook_url_not_allowed": (422, "The webhook URL is not allowed (https, public address)"),
    "unknown_event_type": (422, "An event type is not known"),
    "too_many_endpoints": (422, "The client has the most webhook endpoints allowed"),
    "issuance_suspended": (503, "New verifications and tokens are suspended"),
    "invalid_reason_code": (422, "The reason code is not one of the documented codes"),
    "unknown_client": (422, "No client has that id"),
    "unknown_provider": (422, "No verifier or sender has that name"),
    "not_suspended": (409, "Issuance is not suspended for that scope"),
    "not_quarantined": (409, "That provider is not in quarantine"),
    "service_unavailable": (503, "The service is temporarily unavailable"),
    "overloaded": (503, "The service is at capacity for this request; retry shortly"),
    "internal_error": (500, "Internal error"),
}


class StaleState(Exception):
    """The verification was no longer in an expected state: someone else moved it first.

    Raised by ``app.services.lifecycle`` (which re-exports it); answered here as
    ``invalid_transition``, so it lives in the kit beside the handler that renders it.
    """


class ProblemError(Exception):
    """An error the client caused or can act on. Rendered as problem+json."""

    def __init__(
        self,
        code: str,
        detail: str | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        commit: bool = False,
    ) -> None:
        default_status, title = ERROR_CODES[code]
        #: Keep the transaction's writes although the request fails (a counted code attempt,
        #: a lock): the session scope commits instead of rolling back.
        self.commit = commit
        self.code = code
        self.status = status or default_status
        self.title = title
        self.detail = detail or title
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(f"{code}: {self.detail}")


def problem_response(
    code: str,
    detail: str | None = None,
    *,
    status: int | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    default_status, title = ERROR_CODES[code]
    body: dict[str, Any] = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status or default_status,
        "detail": detail or title,
        "code": code,
        **(extra or {}),
    }
    return JSONResponse(body, status_code=body["status"], headers=headers, media_type=PROBLEM_JSON)


#: Body fields whose validation failures get their own code.
FIELD_CODES = {
    "real_name": "invalid_real_name",
    "id_number": "invalid_id_number",
    "phone": "invalid_phone",
    "consent": "consent_required",
    "external_user_id": "invalid_external_user_id",
    "id_type": "unsupported_id_type",
    "reason": "reason_required",
    "events": "unknown_event_type",
    "note": "reason_required",
}


def _pointer(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc[1:]] if loc and loc[0] == "body" else [str(p) for p in loc]
    return "/" + "/".join(parts)


#: Tags of the request bodies that ``id_type`` tells apart: not fields, left out of pointers.
BODY_TAGS = frozenset({"cn_resident_id", "cn_network_identity"})
_UNKNOWN_TAG = frozenset({"union_tag_invalid", "union_tag_not_found"})


def validation_problem(exc: RequestValidationError) -> JSONResponse:
    """Map pydantic errors to stable codes without echoing any input value."""
    errors = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        kind = err.get("type", "")
        if len(loc) > 1 and loc[0] == "body" and loc[1] in BODY_TAGS:
            loc = ("body", *loc[2:])
        elif kind in _UNKNOWN_TAG and loc == ("body",):
            loc = ("body", "id_type")
        field = str(loc[1]) if len(loc) > 1 and loc[0] == "body" else None
        if kind == "json_invalid":
            code = "malformed_json"
        elif kind == "extra_forbidden":
            code = "unknown_field"
        elif field == "reason_code":  # emergency actions: a documented code is required
            code = "reason_required" if kind == "missing" else "invalid_reason_code"
        elif field in FIELD_CODES:
            code = FIELD_CODES[field]
        else:
            code = "invalid_request"
        # pydantic's "msg" describes the rule (never the value); "input" and "ctx" are dropped.
        errors.append({"pointer": _pointer(loc), "code": code, "detail": str(err.get("msg", ""))})
    first = errors[0]["code"] if errors else "invalid_request"
    detail = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors) or None
    return problem_response(first, detail, extra={"errors": errors})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.code, exc.detail, status=exc.status, headers=exc.headers, extra=exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(exc)

    @app.exception_handler(StaleState)
    async def _stale(_: Request, exc: StaleState) -> JSONResponse:
        # Another request moved the verification first; the client can read it and retry.
        return problem_response(
            "invalid_transition", "The verification changed meanwhile; reload it"
        )

    @app.exception_handler(EpochNotMoved)
    async def _epoch(_: Request, exc: EpochNotMoved) -> JSONResponse:
        # Committed, but not yet in force in every process: the retry is idempotent.
        return problem_response("service_unavailable", headers={"Retry-After": "1"})

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        if not is_input_refusal(exc):
            raise exc  # an outage (503) or a bug (500): the middleware answers
        # The database refused a value (out of range, bad encoding): the input's fault.
        logger.info("database refused a value", extra={"error_type": type(exc.orig).__name__})
        return problem_response("invalid_request", "A value in the request is out of range")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            415: "unsupported_media_type",
        }.get(exc.status_code)
        if code is None:
            code = "invalid_request" if exc.status_code < 500 else "internal_error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return problem_response(code, status=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> str:
    """The methods of the resource at this path, for ``Allow`` on a 405.

    Starlette names only the methods of the first route whose path matched; a resource served
    by several routes (GET and DELETE of one verification) has them all. As in OpenAPI, a path
    without parameters wins over a template that also matches it (``/verifications/search`` is
    not ``/verifications/{verification_id}``).
    """
    from starlette.routing import Match, Route

    matched: list[tuple[int, set[str]]] = []
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                matched.append((len(route.param_convertors), route.methods))
    if not matched:
        return ""
    fewest = min(params for params, _ in matched)
    return ", ".join(sorted(set().union(*(m for params, m in matched if params == fewest))))


def is_input_refusal(exc: BaseException) -> bool:
    """True for a database error caused by a value sent (SQLSTATE class 22, data exception:
    out of range, bad encoding, NUL in text...), which is the client's to fix: a 4xx."""
    from sqlalchemy.exc import DataError, DBAPIError

    if isinstance(exc, DataError):
        return True
    if not isinstance(exc, DBAPIError) or is_database_outage(exc):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


def is_database_outage(exc: BaseException) -> bool:
    """True for errors that mean the database cannot be reached (answered with 503, not 500),
    a connection pool with none free within its timeout included."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    outages = (OperationalError, InterfaceError, PoolTimeout, ConnectionError, TimeoutError)
    if isinstance(exc, outages):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    # PostgreSQL refusing new connections (too many clients, starting up) is an outage too.
    cause = type(getattr(exc, "orig", None)).__name__ + " " + str(getattr(exc, "orig", ""))
    refusals = ("TooManyConnections", "CannotConnectNow", "too many clients")
    return bool(exc.connection_invalidated) or any(r in cause for r in refusals)


#: The body of every error response (RFC 9457), as the OpenAPI schema documents it.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "enum": sorted(ERROR_CODES)},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["pointer", "code", "detail"],
                "properties": {
                    "pointer": {"type": "string"},
                    "code": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
        },
    },
}


def problem_content() -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}


def _add_problem(responses: dict[Any, Any], code: str, status: int | None = None) -> None:
    entry = responses.setdefault(str(status or ERROR_CODES[code][0]), {"description": ""})
    if f"`{code}`" not in entry["description"]:
        entry["description"] = ", ".join(filter(None, [entry["description"], f"`{code}`"]))
    entry["content"] = problem_content()


def problems(*codes: str) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: the problems it can answer, grouped by status."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        _add_problem(out, code)
    return out


def document_problems(app: FastAPI) -> None:
    """Put in the OpenAPI schema the problem responses that come from app-wide code rather than
    from a route: the middleware's rules (400 for NUL characters or a body that is not JSON, 413,
    415), request validation (422, in place of FastAPI's default HTTPValidationError, which this
    app never sends) and authentication (401, 403, 429)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if responses.get("422", {}).get("content", {}).get("application/json"):
                    del responses["422"]  # FastAPI's HTTPValidationError
                codes: list[str] = []
                if "requestBody" in operation:
                    codes += ["malformed_json", "payload_too_large", "unsupported_media_type"]
                    codes.append("unknown_field")
                if "requestBody" in operation or operation.get("parameters"):
                    codes.append("invalid_request")
                    _add_problem(responses, "invalid_request", 400)  # NUL characters
                if any(p.get("name") == "Idempotency-Key" for p in operation.get("parameters", [])):
                    codes += ["idempotency_conflict", "idempotency_in_progress"]
                    codes.append("invalid_idempotency_key")
                if operation.get("security"):
                    if path.startswith("/v1/admin/"):
                        codes += ["unauthorized", "session_expired", "forbidden", "rate_limited"]
                    else:
                        codes += ["unauthorized", "invalid_client", "rate_limited"]
                for code in codes:
                    _add_problem(responses, code)
                for status, entry in responses.items():
                    if status.startswith(("4", "5")):
                        entry["content"] = problem_content()
        for operations in schema.get("webhooks", {}).values():
            for operation in operations.values():  # requests we send: no validation answers
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
