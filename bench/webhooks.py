"""Webhook delivery to a local receiver: events/s delivered and the time from the state change
to its delivery.

The receiver is a small HTTP/1.1 server in the bench process (asyncio + httptools, like the
load generator) that answers every POST ``204`` at once and notes when it arrived. The state
changes are RFC 7009 revocations of issued tokens at a fixed rate (open loop): each commits a
``token.revoked`` event with its ``created_at``, which the worker signs and delivers. After the
run every delivery's signature is checked with the ``standardwebhooks`` package; one that does
not verify, or an event that never arrives, counts as an error.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import httptools
import httpx
from standardwebhooks import Webhook

from bench.cpu import CpuMeter, ServerPids
from bench.loadgen import Outcome, Request, Target, encode_request, open_loop

#: How long after the last revocation the bench waits for outstanding deliveries.
DRAIN_SECONDS = 60.0


@dataclass
class Delivery:
    arrived: float  # time.time()
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Collects deliveries; ``port`` once started."""

    deliveries: list[Delivery] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self, host: str = "127.0.0.1") -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Inbound(self), host, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class _Inbound(asyncio.Protocol):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self._headers, self._body = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.receiver.deliveries.append(Delivery(time.time(), self._headers, b"".join(self._body)))
        self.receiver.arrived.set()
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")


@dataclass
class WebhookRun:
    outcome: Outcome
    #: Revocations answered 200 (each one state change, one event).
    changes: int
    #: Seconds from the first revocation to the last delivery.
    window: float


async def webhook_delivery(
    target: Target,
    key: str,
    tokens: list[str],
    *,
    rate: float,
    duration: float,
    server_pids: ServerPids,
    database_name: str | None,
) -> tuple[WebhookRun, CpuMeter]:
    """Register an endpoint for ``key``'s client at a local receiver, revoke ``tokens`` at
    ``rate``/s for ``duration`` s, and wait for their ``token.revoked`` deliveries."""
    receiver = Receiver()
    await receiver.start()
    base = f"http://{target.authority}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            made = await http.post(
                "/v1/webhook-endpoints",
                json={
                    "url": f"http://127.0.0.1:{receiver.port}/hooks",
                    "events": ["token.revoked"],
                },
                headers={"Authorization": f"Bearer {key}"},
            )
            made.raise_for_status()
            secret = str(made.json()["secret"])
        needed = int(rate * duration) + 1
        if len(tokens) < needed:
            raise RuntimeError(f"{len(tokens)} tokens to revoke, {needed} needed")
        reqs = (Request(_revoke(target, key, token)) for token in tokens[:needed])
        meter = CpuMeter(server_pids, database_name)
        began = time.time()
        revoked = await open_loop(
            target,
            reqs,
            rate=rate,
            duration=duration,
            check=lambda status, body: status == 200,
            max_connections=16,
        )
        changes = len(revoked.latencies)
        deadline = time.monotonic() + DRAIN_SECONDS
        while len(receiver.deliveries) < changes and time.monotonic() < deadline:
            receiver.arrived.clear()
            try:
                await asyncio.wait_for(receiver.arrived.wait(), 1.0)
            except TimeoutError:
                continue
    finally:
        await receiver.stop()
    outcome = Outcome()
    verifier = Webhook(secret)
    seen: set[str] = set()
    last = began
    for delivery in receiver.deliveries:
        try:
            payload = verifier.verify(delivery.body, delivery.headers)
        except Exception as exc:  # any refusal is an error of the run
            outcome.error(f"signature: {type(exc).__name__}")
            continue
        event_id = str(payload["id"])
        if event_id in seen:  # a redelivery is allowed (at least once), not counted twice
            continue
        seen.add(event_id)
        created = datetime.fromisoformat(str(payload["created_at"]).replace("Z", "+00:00"))
        outcome.latencies.append(max(0.0, delivery.arrived - created.timestamp()))
        outcome.statuses["delivered"] += 1
        last = max(last, delivery.arrived)
    missing = changes - len(seen)
    for _ in range(max(0, missing)):
        outcome.error("not delivered")
    outcome.errors += revoked.errors
    outcome.seconds = last - began
    return WebhookRun(outcome, changes, last - began), meter


def _revoke(target: Target, key: str, token: str) -> bytes:
    body = json.dumps({"token": token}).encode()
    return encode_request(
        "POST",
        "/v1/tokens/revoke",
        target.authority,
        headers={"Authorization": f"Bearer {key}"},
        body=body,
    )
