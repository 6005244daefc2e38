"""A webhook receiver on 127.0.0.1 for tests: real HTTP over a real socket, with scripted
misbehaviour (an error status, a hang, a connection reset)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    port: int = 0
    received: list[Received] = field(default_factory=list)
    #: What to do with the next requests, in order: "200", "500", "302", "hang", "reset".
    script: list[str] = field(default_factory=list)
    default: str = "200"
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    handlers: set[asyncio.Task[object]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/realname"

    async def wait_for(self, count: int, seconds: float = 10.0) -> None:
        async with asyncio.timeout(seconds):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(lines[0].split(" ")[1], headers, body, time.monotonic()))
            self.arrived.set()
            action = self.script.pop(0) if self.script else self.default
            if action == "reset":
                writer.transport.abort()
                return
            if action == "hang":
                await asyncio.sleep(3600)
            extra = "Location: http://127.0.0.1:1/\r\n" if action.startswith("3") else ""
            status_line = f"HTTP/1.1 {action} X\r\n{extra}"
            writer.write(status_line.encode() + b"Content-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)


@asynccontextmanager
async def receiver(**kwargs: object) -> AsyncIterator[Receiver]:
    """Run a :class:`Receiver` on a free port of 127.0.0.1 for the block."""
    r = Receiver(**kwargs)  # type: ignore[arg-type]
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.port = server.sockets[0].getsockname()[1]
    try:
        yield r
    finally:
        server.close()
        for task in list(r.handlers):
            task.cancel()
        await asyncio.gather(*r.handlers, return_exceptions=True)
