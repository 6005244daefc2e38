"""The ceiling app: the same server stack as ``realname serve`` (FastAPI on uvicorn[standard],
uvloop + httptools, N worker processes) doing next to nothing.

- ``GET /trivial``: a constant JSON answer (the trivial-endpoint ceiling).
- ``GET /trivial/db/{key}``: one primary-key ``SELECT`` on PostgreSQL through SQLAlchemy Core
  async + asyncpg with the service's pool settings (a floor for any endpoint that reads once).
- ``POST /trivial/tx/{key}``: the shape of a token issue on the driver alone (raw asyncpg, a
  pool of the service's size, no ORM, no dependencies): in one transaction, the row read under
  its lock, a free chain head locked (``SKIP LOCKED``, of 8), a grant row inserted, a log row
  appended in the statement that moves its head; an Ed25519 JWT signed. What the token path
  could reach if everything between the HTTP stack and PostgreSQL cost nothing.

Run as ``uvicorn bench.trivial:create_app --factory``; ``BENCH_TRIVIAL_DATABASE_URL`` names the
database holding ``bench_kv`` (made by :func:`bench.servers.create_kv_table`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from sqlalchemy import Column, Integer, MetaData, Table, Text, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db import ping_when_idle
from app.settings import DB_MAX_OVERFLOW, DB_POOL_SIZE

DATABASE_ENV = "BENCH_TRIVIAL_DATABASE_URL"

metadata = MetaData()
kv = Table("bench_kv", metadata, Column("id", Integer, primary_key=True), Column("value", Text))

#: ``POST /trivial/tx/{key}``'s statements (tables made by :func:`bench.servers.create_kv_table`).
_TX_READ = "SELECT value FROM bench_kv WHERE id = $1 FOR UPDATE"
_TX_FREE_HEAD = "SELECT id, seq, hash FROM bench_head ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
_TX_HEAD = "SELECT id, seq, hash FROM bench_head WHERE id = $1 FOR UPDATE"
_TX_GRANT = "INSERT INTO bench_grant (jti, kv, issued_at) VALUES ($1, $2, now())"
_TX_APPEND = (
    "WITH moved AS (UPDATE bench_head SET seq = $2, hash = $3 WHERE id = $1 RETURNING id) "
    "INSERT INTO bench_log (head, head_seq, hash, prev_hash, kv, data, at) "
    "SELECT id, $2, $3, $4, $5, $6, now() FROM moved"
)
TX_HEADS = 8


async def _keep_session(_: asyncpg.Connection) -> None:
    """A pooled connection's reset: nothing beyond asyncpg's own (ending any transaction)."""


def create_app() -> FastAPI:
    engine: AsyncEngine | None = None
    raw: asyncpg.Pool | None = None
    signing = Ed25519PrivateKey.generate()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal engine, raw
        url = os.environ.get(DATABASE_ENV)
        if url:
            # Released connections are not sent asyncpg's reset query (a statement, hence a
            # transaction, per request): SQLAlchemy's pool, which the service uses, does not.
            raw = await asyncpg.create_pool(
                url, min_size=DB_POOL_SIZE, max_size=DB_POOL_SIZE, reset=_keep_session
            )
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
            if raw is not None:
                await raw.close()

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

    @app.post("/trivial/tx/{key}", status_code=201)
    async def trivial_tx(key: int) -> JSONResponse:
        if raw is None:
            raise HTTPException(503, "no database configured")
        jti = secrets.token_hex(16)
        async with raw.acquire() as conn, conn.transaction():
            if await conn.fetchrow(_TX_READ, key) is None:
                raise HTTPException(404, "no such key")
            head = await conn.fetchrow(_TX_FREE_HEAD)
            if head is None:  # every head held: wait for one
                head = await conn.fetchrow(_TX_HEAD, 1 + secrets.randbelow(TX_HEADS))
            assert head is not None  # waited for
            await conn.execute(_TX_GRANT, jti, key)
            data = f'{{"jti":"{jti}"}}'
            digest = hashlib.sha256(f"{head['hash']}|{data}".encode()).hexdigest()
            await conn.execute(
                _TX_APPEND, head["id"], head["seq"] + 1, digest, head["hash"], key, data
            )
        now = int(time.time())
        token = jwt.encode(
            {"sub": str(key), "jti": jti, "iat": now, "exp": now + 900}, signing, algorithm="EdDSA"
        )
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": 900}, status_code=201
        )

    return app
