"""A key revoked, rotated away or whose client is disabled, through one process (or the CLI),
is refused by another `realname serve` process on its very next request, although that
process had just accepted (and, with Redis, cached) the key.

Two processes on one PostgreSQL database of this module's own, with and without Redis."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admin import auth as admin_auth
from app.db import create_engine, create_sessionmaker, session_scope
from app.runtime import Runtime
from app.services import clients
from app.services.audit import AUDIT_KEYS
from app.settings import Settings
from tests.support import Service, launch, run_cli, scratch_postgres
from tests.test_scale_out import FAST, REDIS_URL, drop_redis_keys

pytestmark = pytest.mark.e2e

PING = "/v1/verifications/ver_00000000000000000000000000000000"
PASSWORD = "a long admin password"


@pytest.fixture(scope="module")
def database(settings: Settings) -> Iterator[str]:
    with scratch_postgres(settings, "realname_scale") as url:
        yield url


@pytest.fixture(scope="module")
async def engine(settings: Settings, database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.model_copy(update={"database_url": database}))
    yield engine
    await engine.dispose()


@contextlib.contextmanager
def two_processes(
    settings: Settings, database: str, tmp_path: Path, *, redis: bool
) -> Iterator[tuple[Service, Service, dict[str, str]]]:
    """Processes A and B on one database, sharing one Redis (a prefix of their own) or none;
    yields them and the environment a CLI run needs to act on the same deployment."""
    prefix = f"keys{uuid.uuid4().hex}"
    env = {**FAST, "REALNAME_DATABASE_URL": database, "REALNAME_RUN_WORKER": "false"}
    if redis:
        env |= {"REALNAME_REDIS_URL": REDIS_URL, "REALNAME_REDIS_PREFIX": prefix}
    services = [launch(settings, log_path=tmp_path / f"{n}.log", **env) for n in "ab"]
    try:
        for service in services:
            service.wait_ready()
        yield services[0], services[1], env
    finally:
        for service in services:
            service.stop()
        if redis:
            drop_redis_keys(prefix)


async def new_client(settings: Settings, engine: AsyncEngine) -> tuple[str, str]:
    async with session_scope(
        create_sessionmaker(engine, info={AUDIT_KEYS: settings.audit_chain_keys})
    ) as session:
        client, key = await clients.create_client(
            session, settings.master_key, name="two-processes", mode="test"
        )
    return client.id, key


async def admin_session(settings: Settings, engine: AsyncEngine, base: str) -> dict[str, str]:
    """An admin of the shared database, signed in through ``base``; its bearer header."""
    from app.runtime import build_runtime

    runtime: Runtime = build_runtime(settings, engine=engine)
    username = f"keys-admin-{uuid.uuid4().hex[:8]}"
    async with session_scope(runtime.sessions) as session:
        await admin_auth.create_admin(
            session, runtime, username=username, password=PASSWORD, role="admin"
        )
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/v1/admin/sessions", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def status_with(base: str, key: str) -> int:
    async with httpx.AsyncClient(base_url=base) as http:
        return (await http.get(PING, headers={"Authorization": f"Bearer {key}"})).status_code


async def key_id_of(base: str, admin: dict[str, str], client_id: str) -> str:
    async with httpx.AsyncClient(base_url=base, headers=admin) as http:
        return str((await http.get(f"/v1/admin/clients/{client_id}")).json()["keys"][0]["id"])


@pytest.mark.parametrize("redis", [True, False], ids=["redis", "no-redis"])
async def test_a_key_revoked_through_one_process_is_refused_by_the_other_at_once(
    settings: Settings, database: str, engine: AsyncEngine, tmp_path: Path, redis: bool
) -> None:
    """Revoke via A's admin API; B, which just accepted the key, refuses it next time."""
    client_id, key = await new_client(settings, engine)
    with two_processes(settings, database, tmp_path, redis=redis) as (a, b, _):
        admin = await admin_session(settings, engine, a.base)
        key_id = await key_id_of(a.base, admin, client_id)
        before = [await status_with(b.base, key) for _ in range(3)]

        async with httpx.AsyncClient(base_url=a.base, headers=admin) as http:
            revoked = await http.post(
                f"/v1/admin/clients/{client_id}/keys/{key_id}/revoke",
                json={"reason_code": "key_compromised"},
            )
        after = await status_with(b.base, key)

    assert before == [404, 404, 404]
    assert revoked.status_code == 200, revoked.text
    assert after == 401


async def test_a_key_rotated_without_overlap_through_one_process_stops_in_the_other(
    settings: Settings, database: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Rotate via A with overlap 0: B refuses the old key next time and accepts the new one."""
    client_id, key = await new_client(settings, engine)
    with two_processes(settings, database, tmp_path, redis=True) as (a, b, _):
        admin = await admin_session(settings, engine, a.base)
        key_id = await key_id_of(a.base, admin, client_id)
        before = await status_with(b.base, key)

        async with httpx.AsyncClient(base_url=a.base, headers=admin) as http:
            rotated = await http.post(
                f"/v1/admin/clients/{client_id}/keys/{key_id}/rotate",
                json={"reason_code": "key_compromised", "overlap_hours": 0},
            )
        old, new = (
            await status_with(b.base, key),
            await status_with(b.base, rotated.json()["key"]["api_key"]),
        )

    assert (before, old, new) == (404, 401, 404)


async def test_a_client_disabled_from_the_cli_is_refused_by_running_processes_at_once(
    settings: Settings, database: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """`realname clients disable` (another process) stops the key on A and B immediately."""
    client_id, key = await new_client(settings, engine)
    with two_processes(settings, database, tmp_path, redis=True) as (a, b, env):
        before = [await status_with(a.base, key), await status_with(b.base, key)]

        disabled = run_cli(
            settings, "clients", "disable", client_id, "--reason-code", "abuse", **env
        )
        after = [await status_with(a.base, key), await status_with(b.base, key)]

    assert before == [404, 404]
    assert disabled.returncode == 0, disabled.stderr
    assert json.loads(disabled.stdout)["disabled"] is True
    assert after == [401, 401]
