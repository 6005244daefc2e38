"""The PostgreSQL pool pings a connection before reuse only when it sat idle
(``app.db.ping_when_idle``): a busy service sends no ping per request, and a connection the
server dropped while it was idle is replaced before any request sees it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db import ping_when_idle
from tests.support import _postgres_admin, postgres_server_url

IDLE = 0.2


@pytest.fixture
async def engine() -> AsyncIterator[tuple[AsyncEngine, list[int]]]:
    """A one-connection pool on the PostgreSQL server, pinged after ``IDLE`` seconds; and the
    list that counts its pings."""
    url = postgres_server_url().replace("postgresql://", "postgresql+asyncpg://", 1)
    made = create_async_engine(url, pool_size=1, max_overflow=0)
    pings: list[int] = []
    dialect = made.sync_engine.dialect
    ping = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return ping(dbapi_connection)

    dialect.do_ping = counted  # type: ignore[method-assign]
    ping_when_idle(made, IDLE)
    try:
        yield made, pings
    finally:
        await made.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_reused_at_once_is_not_pinged(
    engine: tuple[AsyncEngine, list[int]],
) -> None:
    made, pings = engine
    first = await backend_pid(made)
    for _ in range(5):
        assert await backend_pid(made) == first
    assert pings == []


async def test_an_idle_connection_is_pinged_once_and_kept_when_alive(
    engine: tuple[AsyncEngine, list[int]],
) -> None:
    made, pings = engine
    first = await backend_pid(made)
    await asyncio.sleep(IDLE * 2)
    assert await backend_pid(made) == first
    assert pings == [1]


async def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    engine: tuple[AsyncEngine, list[int]],
) -> None:
    """The server ends the pooled connection's backend (a restart, an idle timeout): the next
    checkout finds it dead by its ping and hands out a new connection; the query succeeds."""
    made, pings = engine
    first = await backend_pid(made)
    await _postgres_admin(f"SELECT pg_terminate_backend({first})")
    await asyncio.sleep(IDLE * 2)
    second = await backend_pid(made)
    assert second != first
    assert pings == [1]
