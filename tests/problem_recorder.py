"""Records every (method, route, status, problem code) the test suite observes from the app, so
that ``tests/test_openapi_truth.py`` can check each one is declared in the OpenAPI document.

It wraps ``ServiceMiddleware`` (the outermost layer of every app the tests build), so routes that
other modules add later are recorded without any change here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

from app.middleware import ServiceMiddleware

#: (method, route template, status, problem code or None) seen in this run.
OBSERVED: set[tuple[str, str, int, str | None]] = set()


def _record(scope: Scope, status: int | None, body: bytes, problem: bool) -> None:
    route = scope.get("route")
    method = scope.get("method", "")
    if status is None or status < 400 or not isinstance(route, APIRoute):
        return
    if not route.include_in_schema:  # the admin web pages: HTML, not part of the API
        return
    if method not in (route.methods or ()):  # 405: no operation of this path answered
        return
    code = None
    if problem:
        try:
            code = json.loads(body).get("code")
        except ValueError:
            code = None
    OBSERVED.add((method.lower(), route.path, status, code))


@contextmanager
def recording() -> Iterator[None]:
    original = ServiceMiddleware.__call__

    async def recorded(self: ServiceMiddleware, scope: Scope, receive: Receive, send: Send) -> Any:
        if scope["type"] != "http":
            return await original(self, scope, receive, send)
        seen: dict[str, Any] = {"status": None, "problem": False}
        body = bytearray()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = dict(message.get("headers", []))
                ctype = headers.get(b"content-type", b"")
                seen["problem"] = ctype.startswith(b"application/problem+json")
            elif message["type"] == "http.response.body" and seen["problem"]:
                body.extend(message.get("body", b""))
            await send(message)

        try:
            return await original(self, scope, receive, capture)
        finally:
            _record(scope, seen["status"], bytes(body), seen["problem"])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ServiceMiddleware, "__call__", recorded)
        yield
