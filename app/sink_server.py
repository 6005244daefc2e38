"""A sink for staging: stands in for the SMS gateway and webhook receivers.

``realname sink`` accepts any ``POST`` (the ``http_gateway`` sender's signed sends to ``/sms``,
webhooks to any other path), answers ``200 {"accepted": true}``, and keeps the last
:data:`KEPT` requests in memory for ``GET /messages`` (newest first, optionally
``?path=/sms``), so a staging run can read the code an SMS would have carried. It is a test
double: run it only inside a staging network (the compose file's ``staging`` profile), never
where real people's phones are involved. It logs no bodies.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any, Final

import uvicorn
from fastapi import FastAPI, Request

__all__ = ["DEFAULT_PORT", "create_sink_app", "serve"]

DEFAULT_PORT: Final = 8025
KEPT: Final = 500
#: Headers kept with each message (signatures and ids: what a receiver checks).
_KEPT_HEADERS: Final = (
    "content-type",
    "idempotency-key",
    "x-realname-timestamp",
    "x-realname-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)


def create_sink_app() -> FastAPI:
    messages: deque[dict[str, Any]] = deque(maxlen=KEPT)
    app = FastAPI(title="realname staging sink", version="1")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok"}

    @app.get("/messages")
    async def list_messages(path: str | None = None) -> list[dict[str, Any]]:
        """What was posted, newest first; ``path`` keeps those posted to one path."""
        return [m for m in reversed(messages) if path is None or m["path"] == path]

    @app.post("/{rest:path}")
    async def accept(rest: str, request: Request) -> dict[str, bool]:
        """Accept and keep one request."""
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        messages.append(
            {
                "path": "/" + rest,
                "received_at": time.time(),
                "headers": {h: request.headers[h] for h in _KEPT_HEADERS if h in request.headers},
                "body": body,
            }
        )
        return {"accepted": True}

    return app


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Run the sink with uvicorn until interrupted (``realname sink``)."""
    uvicorn.run(create_sink_app(), host=host, port=port, access_log=False)
