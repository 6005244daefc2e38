"""The ceiling app: the same server stack as ``realname serve`` (FastAPI on uvicorn[standard],
uvloop + httptools, N worker processes) doing next to nothing.

- ``GET /trivial``: a constant JSON answer (the trivial-endpoint ceiling).
- ``GET /trivial/db/{key}``: one primary-key ``SELECT`` on PostgreSQL through SQLAlchemy Core
  async + asyncpg with the service's pool settings (a floor for any endpoint that reads once).

Run as ``uvicorn bench.trivial:create_app --factory``; ``BENCH_TRIVIAL_DATABASE_URL`` names the
database holding ``bench_kv`` (made by :func:`bench.servers.create_kv_table`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy import Column, Integer, MetaData, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db import ping_when_idle
from app.settings import DB_MAX_OVERFLOW, DB_POOL_SIZE

DATABASE_ENV = "BENCH_TRIVIAL_DATABASE_URL"

metadata = MetaData()
kv = Table("bench_kv", metadata, Column("id", Integer, primary_key=True), Column("value", Text))


def create_app() -> FastAPI:
    engine: AsyncEngine | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal engine
        url = os.environ.get(DATABASE_ENV)
        if url:
            # The service's PostgreSQL pool settings (app.db.create_engine).
            engine = create_async_engine(
                url.replace("postgresql://", "postgresql+asyncpg://", 1),
                pool_size=DB_POOL_SIZE,
                max_overflow=DB_MAX_OVERFLOW,
            )
            ping_when_idle(engine)
        try:
            yield
        finally:
            if engine is not None:
                await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/trivial")
    async def trivial() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/trivial/db/{key}")
    async def trivial_db(key: int) -> dict[str, Any]:
        if engine is None:
            raise HTTPException(503, "no database configured")
        async with engine.connect() as conn:
            row = (await conn.execute(select(kv.c.value).where(kv.c.id == key))).first()
        if row is None:
            raise HTTPException(404, "no such key")
        return {"id": key, "value": row[0]}

    return app
