"""One delivery attempt over HTTP: a signed ``POST``, no redirects, a hard deadline.

The connection goes to the address :func:`app.webhooks.urls.check` just approved (with the
original ``Host`` header and TLS server name), not to whatever the name resolves to a moment
later. At most :data:`EXCERPT_BYTES` of the answer are read and kept.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

import httpx

from app.webhooks.urls import IPAddress, Policy, UrlRefused, check

EXCERPT_BYTES: Final = 200


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: ``ok`` for a 2xx within the deadline; otherwise an ``error`` code
    (``timeout``, ``connection_error``, ``redirect_refused``, ``http_<status>``, or the URL
    rule's code)."""

    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None = None
    excerpt: str | None = None


def _pinned_request(
    client: httpx.AsyncClient,
    url: httpx.URL,
    address: IPAddress | None,
    body: bytes,
    headers: dict[str, str],
) -> httpx.Request:
    extensions: dict[str, object] = {}
    target = url
    if address is not None:
        target = url.copy_with(host=str(address))
        if url.scheme == "https":
            extensions["sni_hostname"] = url.host
    return client.build_request(
        "POST",
        target,
        content=body,
        headers={
            **headers,
            "Host": url.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": "realname-webhooks/1",
        },
        extensions=extensions,
    )


async def _excerpt(response: httpx.Response) -> str | None:
    buffer = b""
    async for chunk in response.aiter_raw():
        buffer += chunk
        if len(buffer) >= EXCERPT_BYTES:
            break
    text = buffer[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    return text or None


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    policy: Policy,
    deadline_seconds: float,
) -> Outcome:
    """Check ``url`` again, then POST ``body`` once; never raises for the receiver's faults."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = await check(url, policy)
    except UrlRefused as refused:
        return Outcome(False, None, elapsed(), refused.code)
    # Each checked address in turn while connecting fails (localhost may be ::1 and 127.0.0.1).
    addresses: list[IPAddress | None] = list(target.addresses) or [None]
    try:
        async with asyncio.timeout(deadline_seconds):
            for n, address in enumerate(addresses, start=1):
                request = _pinned_request(client, target.url, address, body, headers)
                try:
                    response = await client.send(request, stream=True, follow_redirects=False)
                except httpx.ConnectError:
                    if n == len(addresses):
                        raise
                    continue
                break
            try:
                excerpt = await _excerpt(response)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(False, None, elapsed(), "timeout")
    except httpx.HTTPError:
        return Outcome(False, None, elapsed(), "connection_error")
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(True, status, elapsed(), None, excerpt)
    error = "redirect_refused" if 300 <= status < 400 else f"http_{status}"
    return Outcome(False, status, elapsed(), error, excerpt)
