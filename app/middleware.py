"""Pure ASGI middleware: request ids, body size and content-type rules, access log, last-resort
error answer. Kept at the ASGI level so that it also guards requests no route matched."""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import is_database_outage, problem_response
from app.logging import request_id_var

logger = logging.getLogger("app.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _BodyTooLarge(Exception):
    pass


@functools.cache
def _series(method: str, route: str, status: int | None) -> tuple[Any, Any]:
    """The request counter's and latency histogram's series for one (method, route template,
    status): looked up once, not per request. Bounded: route templates, not paths."""
    return (
        metrics.HTTP_REQUESTS.labels(method, route, str(status)),
        metrics.HTTP_LATENCY.labels(method, route),
    )


class ServiceMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        json_prefixes: tuple[str, ...] = ("/v1/",),
        form_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.json_prefixes = json_prefixes
        #: Paths that also take ``application/x-www-form-urlencoded`` (the OAuth endpoints).
        self.form_paths = form_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else os.urandom(16).hex()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": None}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            early = self._refuse_early(scope, headers)
            if early is not None:
                await early(scope, receive, send_wrapper)
                return
            await self.app(scope, self._limited(receive), send_wrapper)
        except _BodyTooLarge:
            if status_holder["status"] is None:
                await problem_response("payload_too_large")(scope, receive, send_wrapper)
        except Exception as exc:
            if status_holder["status"] is not None:
                raise
            if is_database_outage(exc):
                logger.error("database unavailable", extra={"error_type": type(exc).__name__})
                response = problem_response("service_unavailable", headers={"Retry-After": "1"})
            else:
                # The type only: exception text can carry request values.
                logger.error("unhandled error", extra={"error_type": type(exc).__name__})
                response = problem_response("internal_error")
            await response(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            count, latency = _series(scope["method"], template, status_holder["status"])
            count.inc()
            latency.observe(elapsed)
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "route": template,
                    "status": status_holder["status"],
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)

    def _refuse_early(self, scope: Scope, headers: dict[str, str]) -> ASGIApp | None:
        raw = scope.get("raw_path") or scope["path"].encode()
        if b"%00" in raw or b"\x00" in raw or b"%00" in scope.get("query_string", b""):
            return problem_response(
                "invalid_request", "NUL characters are not accepted", status=400
            )
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return problem_response("payload_too_large")
        if scope["method"] in _BODY_METHODS and scope["path"].startswith(self.json_prefixes):
            ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            has_body = (length is not None and length != "0") or "transfer-encoding" in headers
            is_json = ctype == "application/json" or ctype.endswith("+json")
            is_form = (
                ctype == "application/x-www-form-urlencoded" and scope["path"] in self.form_paths
            )
            if has_body and not (is_json or is_form):
                return problem_response("unsupported_media_type")
        return None

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                # Control characters are refused in decoded values (app/schemas/text.py), not
                # here: a JSON escape can be split across chunks, a form value is encoded.
                if seen > limit:
                    raise _BodyTooLarge
            return message

        return wrapped
