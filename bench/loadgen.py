"""A lean HTTP/1.1 keep-alive load generator on asyncio (uvloop) and httptools.

It runs in the bench process, on the same cores as the server, so it is kept cheap: requests
are pre-encoded bytes, responses are parsed by httptools (the parser uvicorn uses), and nothing
is decoded while the clock runs. Ceilings and scenarios use this same generator, so its cost
weighs on both sides of every ratio.

Two shapes of load:

- :func:`closed_loop`: ``concurrency`` connections, each sending its next request as soon as the
  previous answer arrived (throughput; latency as each connection saw it).
- :func:`open_loop`: requests at a fixed arrival rate on a pool of connections; latency is taken
  from each request's *scheduled* start, so a stalled server cannot hide its stall (no
  coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import httptools

#: Answers kept as error samples per run (status and the start of the body).
MAX_ERROR_SAMPLES = 5
#: An idle connection older than this is not reused: uvicorn closes keep-alive connections
#: after 5 s idle, and a request sent just as it does would fail through no fault of the server.
MAX_IDLE_REUSE_SECONDS = 3.0

Check = Callable[[int, bytes], bool]


def encode_request(
    method: str,
    path: str,
    host: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> bytes:
    """One HTTP/1.1 keep-alive request as bytes (JSON body when ``body`` is given)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


@dataclass(frozen=True, slots=True)
class Request:
    raw: bytes
    #: Handed back with the body of a successful answer when the run keeps bodies.
    tag: object = None


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.last_used = time.monotonic()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("connection closed by the server"))

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self._body)))

    # -- use --------------------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _timed_out(self) -> None:
        self._fail(TimeoutError("no answer in time"))
        self.close()

    async def request(self, raw: bytes, answer_within: float) -> tuple[int, bytes]:
        if self.closed or self.transport is None:
            raise ConnectionError("connection is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._waiter = waiter
        self.transport.write(raw)
        timer = loop.call_later(answer_within, self._timed_out)
        try:
            return await waiter
        finally:
            timer.cancel()
            self.last_used = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def connect(target: Target, within: float = 10.0) -> _Connection:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(within):
        _, protocol = await loop.create_connection(_Connection, target.host, target.port)
    return protocol


@dataclass
class Outcome:
    """Raw result of one run: latencies (seconds) of the answers ``check`` accepted."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: ``(request.tag, body)`` of accepted answers, when the run was asked to keep them.
    kept: list[tuple[object, bytes]] = field(default_factory=list)
    #: Latencies (seconds) of answers the run's ``shed`` check took for load shedding (503
    #: ``overloaded``): neither accepted nor errors.
    shed: list[float] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(what)

    def record(
        self,
        req: Request,
        status: int,
        body: bytes,
        latency: float,
        check: Check,
        keep: bool,
        shed: Check | None = None,
    ) -> bool:
        """Count one answer; True when ``shed`` took it for load shedding."""
        self.statuses[str(status)] += 1
        if check(status, body):
            self.latencies.append(latency)
            if keep:
                self.kept.append((req.tag, body))
        elif shed is not None and shed(status, body):
            self.shed.append(latency)
            return True
        else:
            self.error(f"{status} {body[:300].decode('utf-8', 'replace')}")
        return False

    def failed(self, exc: BaseException) -> None:
        self.statuses[type(exc).__name__] += 1
        self.error(f"{type(exc).__name__}: {exc}")


async def closed_loop(
    target: Target,
    requests: Iterator[Request],
    *,
    concurrency: int,
    duration: float,
    check: Check,
    keep_bodies: bool = False,
    answer_within: float = 30.0,
    shed: Check | None = None,
    pause_after_shed: float = 0.0,
) -> Outcome:
    """Send ``requests`` on ``concurrency`` connections until they run out or ``duration`` ends.

    Connections are opened before the clock starts. ``seconds`` runs from the start until the
    last in-flight answer arrived. An answer that ``shed`` accepts (a refusal to shed load) is
    counted apart, and its connection waits ``pause_after_shed`` seconds (the answer's
    ``Retry-After``, as a client honouring it would) before its next request.
    """
    out = Outcome()
    conns: list[_Connection | None] = list(
        await asyncio.gather(*(connect(target) for _ in range(concurrency)))
    )
    start = time.perf_counter()
    deadline = start + duration

    async def worker(slot: int) -> None:
        conn = conns[slot]
        perf = time.perf_counter
        while perf() < deadline:
            req = next(requests, None)
            if req is None:
                return
            try:
                if conn is None or conn.closed:
                    conn = conns[slot] = await connect(target)
                began = perf()
                status, body = await conn.request(req.raw, answer_within)
            except (OSError, TimeoutError, httptools.HttpParserError) as exc:
                out.failed(exc)
                if conn is not None:
                    conn.close()
                conn = conns[slot] = None
                await asyncio.sleep(0.05)  # no hot loop against a server that is down
                continue
            if out.record(req, status, body, perf() - began, check, keep_bodies, shed):
                await asyncio.sleep(min(pause_after_shed, max(deadline - perf(), 0.0)))

    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        out.seconds = time.perf_counter() - start
        for conn in conns:
            if conn is not None:
                conn.close()
    return out


async def open_loop(
    target: Target,
    requests: Iterator[Request],
    *,
    rate: float,
    duration: float,
    check: Check,
    max_connections: int = 64,
    answer_within: float = 30.0,
) -> Outcome:
    """Start one request every ``1/rate`` seconds for ``duration``; latency from schedule."""
    out = Outcome()
    idle: list[_Connection] = list(
        await asyncio.gather(*(connect(target) for _ in range(min(8, max_connections))))
    )
    slots = asyncio.Semaphore(max_connections)
    perf = time.perf_counter
    pending: set[asyncio.Task[None]] = set()

    async def one(req: Request, scheduled: float) -> None:
        async with slots:
            conn = idle.pop() if idle else None
            if conn is not None and time.monotonic() - conn.last_used > MAX_IDLE_REUSE_SECONDS:
                conn.close()
                conn = None
            try:
                if conn is None or conn.closed:
                    conn = await connect(target)
                status, body = await conn.request(req.raw, answer_within)
            except (OSError, TimeoutError, httptools.HttpParserError) as exc:
                out.failed(exc)
                if conn is not None:
                    conn.close()
                return
            out.record(req, status, body, perf() - scheduled, check, False)
            if not conn.closed:
                idle.append(conn)

    total = int(rate * duration)
    start = perf() + 0.01
    try:
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            req = next(requests, None)
            if req is None:
                break
            task = asyncio.create_task(one(req, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=answer_within + 5)
    finally:
        out.seconds = perf() - start
        for task in list(pending):
            task.cancel()
        for conn in idle:
            conn.close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
    return out
