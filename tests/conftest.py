"""Shared fixtures.

The database is real: PostgreSQL when ``REALNAME_TEST_DATABASE_URL`` names a server (a fresh
database is created for the run and migrated by Alembic), otherwise a SQLite file, also built by
Alembic. Every test starts from empty tables (the shipped policy stays).

Settings come from these fixtures, never from the shell: every ``REALNAME_*`` variable except the
suite's own ``REALNAME_TEST_*`` knobs is dropped before collection, and the HTTP registry of live
clients is a port that refuses connections whatever else listens on this machine.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

import app.models  # noqa: F401
from app import migrate
from app.db import session_scope
from app.main import create_app
from app.runtime import Runtime, build_runtime
from app.services import clients
from app.settings import Settings
from app.worker import Worker
from tests.problem_recorder import recording
from tests.support import ambient_settings, refused_url

TEST_SECRET = base64.urlsafe_b64encode(b"s" * 32).decode()
TEST_BLIND_KEYS = "1:" + base64.urlsafe_b64encode(b"b" * 32).decode()


def _server_url(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


async def _admin(server: str, statement: str) -> None:
    import asyncpg

    dsn = server.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def pytest_configure(config: pytest.Config) -> None:
    """Drop the shell's ``REALNAME_*`` settings before any test module is imported."""
    for name in ambient_settings(os.environ):
        del os.environ[name]


@pytest.fixture(scope="session", autouse=True)
def _record_problems() -> Iterator[None]:
    """Record every error answer of the app for the OpenAPI truth check (runs last)."""
    with recording():
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The check of observed problems against the OpenAPI document runs after everything else."""
    last = [i for i in items if i.nodeid.startswith("tests/test_openapi_truth.py")]
    items[:] = [i for i in items if i not in last] + last


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = os.environ.get("REALNAME_TEST_DATABASE_URL", "")
    if not server.startswith("postgres"):
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    name = f"realname_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield _server_url(server, name)
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def registry_url() -> Iterator[str]:
    """Where live clients' HTTP registry is: a port that refuses connections (tests that want
    an answering registry start one on a free port)."""
    with refused_url() as url:
        yield url


@pytest.fixture(scope="session")
def settings(
    database_url: str, registry_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        env="test",
        database_url=database_url,
        registry_url=registry_url,
        secret_key=TEST_SECRET,
        blind_index_keys=TEST_BLIND_KEYS,
        dev_keys_file=tmp_path_factory.mktemp("keys") / "dev-keys.json",
        # The cheapest argon2 profile: tests check behaviour, bench/ measures cost.
        identity_hash_memory_kib=8,
        identity_hash_time_cost=1,
        password_hash_memory_kib=8,
        password_hash_time_cost=1,
        password_hash_parallelism=1,
        redis_url=os.environ.get("REALNAME_TEST_REDIS_URL") or None,
        # One audit chain, so that tests can name events by their place in it whatever the
        # worker writes meanwhile; tests/test_audit_chains.py runs several.
        audit_chains=1,
        check_retry_backoff_seconds=0.01,
        webhook_timeout_seconds=2,
        _env_file=None,
    )


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Settings:
    migrate.upgrade(settings)
    return settings


@pytest.fixture(scope="session")
async def runtime(migrated: Settings) -> AsyncIterator[Runtime]:
    rt = build_runtime(migrated)
    rt.start()
    if rt.invalidations.enabled:  # caches serve only once the subscription is confirmed
        assert await rt.invalidations.ready(), "no cache-invalidation subscription"
    yield rt
    await rt.close()


# Kept across tests: the shipped policy, and signing keys (cached per process, as in production).
KEEP_TABLES = {"policies", "alembic_version", "signing_keys"}


@pytest.fixture(autouse=True)
async def _clean_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty every table after a test that used the database (the shipped policy stays)."""
    yield
    if "runtime" not in request.fixturenames:
        return
    rt: Runtime = request.getfixturevalue("runtime")
    await rt.limits.reset()
    rt.api_keys.clear()
    rt.measures.clear()
    rt.endpoints.clear()
    rt.token_claims.clear()
    rt.policies.clear()
    tables = [
        t.name for t in reversed(SQLModel.metadata.sorted_tables) if t.name not in KEEP_TABLES
    ]
    async with rt.engine.begin() as conn:
        if rt.settings.is_sqlite:
            for name in tables:
                await conn.execute(text(f"DELETE FROM {name}"))  # noqa: S608 (table names from metadata)
        else:
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        await conn.execute(text("DELETE FROM policies WHERE version != '2026-01'"))


@pytest.fixture
def queued_checks(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """Test keys' checks go through the outbox worker, as live providers' always do, instead of
    running in the registration's transaction (``inline_checks``): for tests of the worker's
    pipeline (leases, crashes, retries) and of the states a verification passes through
    before its checks have run."""
    monkeypatch.setattr(
        runtime, "settings", runtime.settings.model_copy(update={"inline_checks": False})
    )
    return runtime


@pytest.fixture
async def http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The app over httpx's ASGI transport (in process)."""
    application = create_app(runtime=runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://testserver"
    ) as client:
        yield client


@pytest.fixture
def make_client(runtime: Runtime) -> Any:
    """Factory: create an API client and return ``(client_id, api_key)``."""

    async def _make(
        mode: str = "test", *, level: str = "L2", name: str = "Acme"
    ) -> tuple[str, str]:
        async with session_scope(runtime.sessions) as session:
            client, key = await clients.create_client(
                session, runtime.master_key, name=name, mode=mode, default_level=level
            )
        return client.id, key

    return _make


@pytest.fixture
async def api_key(make_client: Any) -> str:
    _, key = await make_client("test", level="L1")
    return str(key)


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker(runtime: Runtime) -> Worker:
    """The outbox worker; tests drive it with ``await worker.run_until_idle()``."""
    return Worker(runtime)
