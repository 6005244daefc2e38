"""Database engine and sessions.

Services flush; only :func:`session_scope` (used by the request dependency, the worker and the
CLI) commits, so each request or job is one transaction.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from sqlalchemy import event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.errors import ProblemError
from app.hotcache import run_after_commit
from app.settings import DB_MAX_OVERFLOW, DB_POOL_SIZE, Settings


def create_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    url = settings.async_database_url
    if settings.is_sqlite:
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        _serialise_sqlite_writes(engine)
        return engine
    kwargs.setdefault(
        "connect_args",
        {
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": settings.db_statement_timeout_seconds,
        },
    )
    kwargs.setdefault("pool_timeout", settings.db_connect_timeout_seconds)
    kwargs.setdefault("pool_size", DB_POOL_SIZE)
    kwargs.setdefault("max_overflow", DB_MAX_OVERFLOW)
    # Each statement sees what committed before it: introspection's cache relies on a database
    # read after its epoch read seeing every revocation committed before that (app/hotcache.py).
    kwargs.setdefault("isolation_level", "READ COMMITTED")
    engine = create_async_engine(url, **kwargs)
    ping_when_idle(engine)
    return engine


#: A pooled connection idle longer than this is pinged before it is handed out again.
PING_AFTER_IDLE_SECONDS = 1.0


def ping_when_idle(engine: AsyncEngine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Pessimistic disconnect handling for connections that sat idle: a connection checked out
    again within ``idle_seconds`` of its return (any busy service) is used as it is, one idle
    longer is pinged first, and a dead one is replaced before the request sees it.

    ``pool_pre_ping`` pings on every checkout: with asyncpg a ping is two round trips (``BEGIN``,
    ``ROLLBACK``), as many as the rest of a token issue's reads. What it guards against (a
    PostgreSQL restart, a failover, a proxy's idle timeout) leaves connections idle, or breaks
    them in use, and then SQLAlchemy recycles the whole pool (every connection older than the
    failure) at their next checkout."""
    sync_engine = engine.sync_engine
    driver_error = sync_engine.dialect.loaded_dbapi.Error

    @event.listens_for(sync_engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _handed_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned_at = record.info.pop("returned_at", None)
        if returned_at is None or time.monotonic() - returned_at < idle_seconds:
            return
        try:
            sync_engine.dialect.do_ping(dbapi_connection)
        except driver_error as error:
            if sync_engine.dialect.is_disconnect(error, dbapi_connection, None):
                # The pool discards this connection and checks out another (a new one if need be).
                raise exc.DisconnectionError() from error
            raise


def _serialise_sqlite_writes(engine: AsyncEngine) -> None:
    """SQLite: WAL, foreign keys, and BEGIN IMMEDIATE so concurrent writers queue instead of
    failing with 'database is locked' when a read transaction upgrades to a write."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _: Any) -> None:
        dbapi_conn.isolation_level = None  # let us issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Overwrite deleted content, so erased data does not linger in free pages.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


async def flush_erased_pages(engine: AsyncEngine) -> None:
    """After an erasure on SQLite, move the WAL into the database and truncate it, so the old
    row images (written before the erasure) leave the WAL file. PostgreSQL keeps dead tuples
    until VACUUM, which autovacuum runs; see the README on erasure."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as conn:
        # Outside any transaction (our BEGIN IMMEDIATE would block the checkpoint).
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def ping(engine: AsyncEngine) -> None:
    """One round trip to the database (the readiness probe); raises when it does not answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def insert_ignoring_conflicts(
    session: AsyncSession, model: type[Any], conflict_columns: list[str]
) -> Any:
    """``INSERT … ON CONFLICT (conflict_columns) DO NOTHING`` in the session's dialect: one
    statement where a savepoint, an insert and a release would take three."""
    return insert_ignoring(session.get_bind().dialect.name, model, conflict_columns)


def insert_ignoring(dialect: str, model: Any, conflict_columns: list[str]) -> Any:
    """:func:`insert_ignoring_conflicts` for a dialect by name (for statements built once);
    ``model`` may be a table."""
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing(index_elements=conflict_columns)
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing(index_elements=conflict_columns)
    raise NotImplementedError(f"no INSERT … ON CONFLICT for {dialect}")


def create_sessionmaker(
    engine: AsyncEngine, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions of one runtime; ``info`` is copied into every session's ``info``."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info or {})


@asynccontextmanager
async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: commit when the block succeeds, roll back when it raises (except a
    :class:`~app.errors.ProblemError` raised with ``commit=True``)."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except ProblemError as exc:
            if exc.commit:
                await session.commit()
                await run_after_commit(session)
            else:
                await session.rollback()
            raise
        except BaseException:
            await session.rollback()
            raise
        await run_after_commit(session)


class LazySession:
    """A :func:`session_scope` begun only when first asked for (``await lazy()``), so that a
    request answered from memory never checks out a connection. Ended, with the scope's
    commit-or-rollback, by :meth:`scope`'s block."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], stack: AsyncExitStack) -> None:
        self._factory = factory
        self._stack = stack
        self._session: AsyncSession | None = None

    @property
    def opened(self) -> bool:
        return self._session is not None

    async def __call__(self) -> AsyncSession:
        if self._session is None:
            self._session = await self._stack.enter_async_context(session_scope(self._factory))
        return self._session

    @classmethod
    @asynccontextmanager
    async def scope(cls, factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[LazySession]:
        """A lazy session for the block; its transaction (if begun) ends with the block."""
        async with AsyncExitStack() as stack:
            yield cls(factory, stack)
