"""Scale-out: two `realname serve` processes on one PostgreSQL database and one Redis, with
requests raced across them. Uniqueness, idempotency, single-use codes and rate limits must
hold across processes, not just inside one.

The database is a PostgreSQL database of this module's own (``realname_scale_*``), whatever
the rest of the suite runs on: SQLite cannot be shared by processes on several hosts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine, create_sessionmaker, session_scope
from app.services import clients
from app.services.audit import AUDIT_KEYS
from app.settings import Settings
from tests.support import (
    Service,
    kill_redis_clients,
    launch,
    new_person,
    run_cli,
    scratch_postgres,
)
from tests.test_e2e_verifiers import api, inbox_code, wait_status

pytestmark = pytest.mark.e2e

FAST = {"REALNAME_CHECK_RETRY_BACKOFF_SECONDS": "0.05", "REALNAME_WORKER_POLL_SECONDS": "0.2"}
REDIS_URL = os.environ.get("REALNAME_TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"
ROUNDS = 3


@pytest.fixture(scope="module")
def scale_database(settings: Settings) -> Iterator[str]:
    with scratch_postgres(settings, "realname_scale") as url:
        yield url


@pytest.fixture(scope="module")
async def scale_engine(settings: Settings, scale_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.model_copy(update={"database_url": scale_database}))
    yield engine
    await engine.dispose()


@contextlib.contextmanager
def two_processes(
    settings: Settings,
    database: str,
    tmp_path: Path,
    *,
    b_runs_worker: bool = True,
    b_args: Sequence[str] = (),
    prefix: str | None = None,
) -> Iterator[tuple[Service, Service]]:
    """Processes A and B on one database and one Redis (a key prefix of this test's own);
    ``b_args`` are B's extra `realname serve` arguments."""
    prefix = prefix or f"scale{uuid.uuid4().hex}"
    env = {
        **FAST,
        "REALNAME_DATABASE_URL": database,
        "REALNAME_REDIS_URL": REDIS_URL,
        "REALNAME_REDIS_PREFIX": prefix,
        # One public URL for both, as behind a load balancer: tokens of A are B's too.
        "REALNAME_PUBLIC_URL": "https://realname.test",
    }
    b_env = {**env, "REALNAME_RUN_WORKER": "true" if b_runs_worker else "false"}
    services: list[Service] = []
    try:
        services.append(launch(settings, log_path=tmp_path / "a.log", **env))
        services.append(launch(settings, log_path=tmp_path / "b.log", args=b_args, **b_env))
        for service in services:
            service.wait_ready()
        yield services[0], services[1]
    finally:
        for service in services:
            service.stop()
        drop_redis_keys(prefix)


def drop_redis_keys(prefix: str) -> None:
    """Delete the limit counters the two processes kept under ``prefix``."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(itertools.islice(client.scan_iter(match=f"{prefix}*", count=500), 10_000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def new_client(
    settings: Settings, engine: AsyncEngine, *, level: str = "L2", quota: int = 0
) -> tuple[str, str]:
    """A test-mode client in the shared database; ``(client_id, api_key)``."""
    factory = create_sessionmaker(engine, info={AUDIT_KEYS: settings.audit_chain_keys})
    async with session_scope(factory) as session:
        client, key = await clients.create_client(
            session, settings.master_key, name="scale", mode="test", default_level=level
        )
        client.request_quota_per_minute = quota
    return client.id, key


async def count_verifications(engine: AsyncEngine, *external_user_ids: str) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM verifications WHERE external_user_id = ANY(:ids)"),
            {"ids": list(external_user_ids)},
        )
        return int(result.scalar_one())


async def test_same_person_as_two_users_through_both_processes_is_registered_once(
    settings: Settings, scale_database: str, scale_engine: AsyncEngine, tmp_path: Path
) -> None:
    """One person raced in as two users via A and B: one 201, one 409 identity_in_use."""
    _, key = await new_client(settings, scale_engine, level="L1")
    with two_processes(settings, scale_database, tmp_path) as (a, b):
        async with api(a.base, key) as ca, api(b.base, key) as cb:
            for _ in range(ROUNDS):
                person = new_person()
                first, second = f"{person['external_user_id']}-a", f"{person['external_user_id']}-b"
                answers = await asyncio.gather(
                    ca.post("/v1/verifications", json={**person, "external_user_id": first}),
                    cb.post("/v1/verifications", json={**person, "external_user_id": second}),
                )
                assert sorted(r.status_code for r in answers) == [201, 409], [
                    r.text for r in answers
                ]
                refused = next(r for r in answers if r.status_code == 409)
                assert refused.json()["code"] == "identity_in_use"
                assert await count_verifications(scale_engine, first, second) == 1


async def test_same_idempotency_key_on_both_processes_makes_one_verification(
    settings: Settings, scale_database: str, scale_engine: AsyncEngine, tmp_path: Path
) -> None:
    """One Idempotency-Key raced through A and B makes one verification, replayed to all."""
    _, key = await new_client(settings, scale_engine, level="L1")
    with two_processes(settings, scale_database, tmp_path) as (a, b):
        async with api(a.base, key) as ca, api(b.base, key) as cb:
            for _ in range(ROUNDS):
                body, idem = new_person(), {"Idempotency-Key": f"scale-{uuid.uuid4().hex}"}
                answers = await asyncio.gather(
                    *(
                        (ca if i % 2 else cb).post("/v1/verifications", json=body, headers=idem)
                        for i in range(6)
                    )
                )
                created = [r for r in answers if r.status_code == 201]
                assert created, [r.text for r in answers]
                assert len({r.json()["id"] for r in created}) == 1
                for r in answers:
                    assert r.status_code == 201 or (
                        r.status_code == 409 and r.json()["code"] == "idempotency_in_progress"
                    ), r.text
                assert await count_verifications(scale_engine, str(body["external_user_id"])) == 1
                replay = await cb.post("/v1/verifications", json=body, headers=idem)
                assert replay.json()["id"] == created[0].json()["id"]


async def test_right_code_raced_across_both_processes_succeeds_once(
    settings: Settings, scale_database: str, scale_engine: AsyncEngine, tmp_path: Path
) -> None:
    """The right code raced ten times through A and B succeeds exactly once."""
    _, key = await new_client(settings, scale_engine)
    with two_processes(settings, scale_database, tmp_path) as (a, b):
        async with api(a.base, key) as ca, api(b.base, key) as cb:
            vid = (await ca.post("/v1/verifications", json=new_person())).json()["id"]
            assert (await wait_status(ca, vid))["status"] == "awaiting_code"
            code = await inbox_code(cb, vid)
            answers = await asyncio.gather(
                *(
                    (ca if i % 2 else cb).post(
                        f"/v1/verifications/{vid}/sms-code", json={"code": code}
                    )
                    for i in range(10)
                )
            )
            assert sum(r.status_code == 200 for r in answers) == 1, [r.text for r in answers]
            for r in answers:
                assert r.status_code == 200 or (
                    r.status_code == 409 and r.json()["code"] == "verification_not_awaiting_code"
                ), r.text
            assert (await cb.get(f"/v1/verifications/{vid}")).json()["status"] == "verified"


async def test_resend_through_b_right_after_the_code_sent_by_a_is_rate_limited(
    settings: Settings, scale_database: str, scale_engine: AsyncEngine, tmp_path: Path
) -> None:
    """A resend via B right after A's worker sent the code is a 429 (the limit is in Redis)."""
    _, key = await new_client(settings, scale_engine)
    with two_processes(settings, scale_database, tmp_path, b_runs_worker=False) as (a, b):
        async with api(a.base, key) as ca, api(b.base, key) as cb:
            vid = (await ca.post("/v1/verifications", json=new_person())).json()["id"]
            assert (await wait_status(ca, vid))["status"] == "awaiting_code"
            await inbox_code(ca, vid)
            resend = await cb.post(f"/v1/verifications/{vid}/sms-code/resend")
            assert resend.status_code == 429, resend.text
            assert resend.json()["code"] == "rate_limited"
            assert 1 <= int(resend.headers["Retry-After"]) <= 60
            messages = (
                await cb.get("/v1/sandbox/messages", params={"verification_id": vid})
            ).json()
            assert len(messages["data"]) == 1


async def test_client_quota_is_shared_by_both_processes(
    settings: Settings, scale_database: str, scale_engine: AsyncEngine, tmp_path: Path
) -> None:
    """A client allowed 6 requests a minute gets 6 in all across A and B, not 6 from each."""
    _, key = await new_client(settings, scale_engine, quota=6)
    with two_processes(settings, scale_database, tmp_path) as (a, b):
        async with api(a.base, key) as ca, api(b.base, key) as cb:
            allowed: list[httpx.Response] = []
            for i in range(6):
                allowed.append(await (ca if i % 2 else cb).get("/v1/verifications/ver_missing"))
            assert [r.status_code for r in allowed] == [404] * 6
            for c in (ca, cb):
                refused = await c.get("/v1/verifications/ver_missing")
                assert refused.status_code == 429, refused.text
                assert refused.json()["code"] == "rate_limited"
                assert int(refused.headers["Retry-After"]) >= 1


def metric(metrics_text: str, name: str, *labels: str) -> float:
    """The value of ``name`` (with every one of ``labels``, e.g. ``'cache="api_key"'``) in a
    /metrics answer; 0 when absent."""
    for line in metrics_text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(label in line for label in labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def cache_hits(metrics_text: str, cache: str) -> float:
    """``realname_cache_lookups_total{cache=…,result="hit"}`` from a /metrics answer."""
    return metric(metrics_text, "realname_cache_lookups_total", f'cache="{cache}"', 'result="hit"')


async def verified_token(client: httpx.AsyncClient) -> tuple[str, str]:
    """Register a new person (L1), wait for verified, issue a token: ``(vid, token)``."""
    created = await client.post("/v1/verifications", json=new_person())
    assert created.status_code == 201, created.text
    vid = created.json()["id"]
    assert (await wait_status(client, vid))["status"] == "verified"
    issued = await client.post(f"/v1/verifications/{vid}/tokens")
    assert issued.status_code == 201, issued.text
    return vid, issued.json()["access_token"]


async def test_revocation_through_a_is_seen_at_once_by_b_which_cached_the_token_active(
    settings: Settings, scale_database: str, scale_engine: AsyncEngine, tmp_path: Path
) -> None:
    """B answers repeated introspections of a token from its cache; a revocation through A
    (RFC 7009, then an erasure) is seen by B's very next introspection, not after a TTL."""
    _, key = await new_client(settings, scale_engine, level="L1")
    with two_processes(settings, scale_database, tmp_path) as (a, b):
        async with api(a.base, key) as ca, api(b.base, key) as cb:
            for revoke in ("token", "erasure"):
                vid, token = await verified_token(ca)
                before = cache_hits((await cb.get("/metrics")).text, "token_state")
                for _ in range(3):
                    answer = (await cb.post("/v1/tokens/introspect", json={"token": token})).json()
                    assert answer["active"] is True
                after = cache_hits((await cb.get("/metrics")).text, "token_state")
                assert after - before >= 2, "B did not serve the repeats from its cache"
                if revoke == "token":
                    r = await ca.post("/v1/tokens/revoke", json={"token": token})
                else:
                    r = await ca.delete(f"/v1/verifications/{vid}")
                assert r.status_code == 200, r.text
                answer = (await cb.post("/v1/tokens/introspect", json={"token": token})).json()
                assert answer == {"active": False}, revoke


async def test_a_tokens_process_sees_revocations_through_an_all_process_at_once_and_vice_versa(
    settings: Settings, scale_database: str, scale_engine: AsyncEngine, tmp_path: Path
) -> None:
    """T (`serve --role tokens`) serves introspection from its cache and is subscribed like any
    API process: a token revoked through A (the whole API) is inactive on T's very next
    introspection, and one revoked through T on A's; T answers registrations 404."""
    _, key = await new_client(settings, scale_engine, level="L1")
    with two_processes(settings, scale_database, tmp_path, b_args=("--role", "tokens")) as (a, t):
        async with api(a.base, key) as ca, api(t.base, key) as ct:
            refused = await ct.post("/v1/verifications", json=new_person())
            assert (refused.status_code, refused.json()["code"]) == (404, "not_found")
            assert metric((await ct.get("/metrics")).text, "realname_cache_invalidation_subscribed")
            for revoker, reader in ((ca, ct), (ct, ca)):
                _, token = await verified_token(ca)
                before = cache_hits((await reader.get("/metrics")).text, "token_state")
                for _ in range(3):
                    answer = await reader.post("/v1/tokens/introspect", json={"token": token})
                    assert answer.json()["active"] is True, answer.text
                after = cache_hits((await reader.get("/metrics")).text, "token_state")
                assert after - before >= 2, "the reader did not serve the repeats from its cache"
                revoked = await revoker.post("/v1/tokens/revoke", data={"token": token})
                assert revoked.status_code == 200, revoked.text
                answer = await reader.post("/v1/tokens/introspect", json={"token": token})
                assert answer.json() == {"active": False}, str(revoker.base_url)


async def test_api_key_revoked_through_another_process_is_refused_at_once_by_b_which_cached_it(
    settings: Settings, scale_database: str, scale_engine: AsyncEngine, tmp_path: Path
) -> None:
    """B answers a client from its cached API key; once the key's revocation (by the CLI, a
    third process) has returned, B refuses the key on its very next request."""
    client_id, key = await new_client(settings, scale_engine, level="L1")
    prefix = f"scale{uuid.uuid4().hex}"
    with two_processes(settings, scale_database, tmp_path, prefix=prefix) as (_, b):
        async with api(b.base, key) as cb:
            before = cache_hits((await cb.get("/metrics")).text, "api_key")
            for _ in range(3):
                assert (await cb.get("/v1/verifications/ver_missing")).status_code == 404
            after = cache_hits((await cb.get("/metrics")).text, "api_key")
            assert after - before >= 2, "B did not serve the repeats from its cache"
            async with scale_engine.connect() as conn:
                key_id = (
                    await conn.execute(
                        text("SELECT id FROM api_keys WHERE client_id = :c"), {"c": client_id}
                    )
                ).scalar_one()
            env = {
                "REALNAME_DATABASE_URL": scale_database,
                "REALNAME_REDIS_URL": REDIS_URL,
                "REALNAME_REDIS_PREFIX": prefix,
            }
            revoked = await asyncio.to_thread(
                run_cli, settings, "clients", "revoke-key", key_id, "--reason-code", "other", **env
            )
            assert revoked.returncode == 0, revoked.stderr
            refused = await cb.get("/v1/verifications/ver_missing")
            assert refused.status_code == 401, refused.text


async def test_suspension_by_another_process_is_in_force_at_once_in_b_which_cached_the_measures(
    settings: Settings, scale_database: str, scale_engine: AsyncEngine, tmp_path: Path
) -> None:
    """B answers registrations with the emergency measures it holds in memory; once a
    suspension of issuance (by the CLI, a third process) has returned, B refuses the very next
    registration with 503 issuance_suspended, and once it is resumed B accepts again."""
    client_id, key = await new_client(settings, scale_engine, level="L1")
    prefix = f"scale{uuid.uuid4().hex}"
    env = {
        "REALNAME_DATABASE_URL": scale_database,
        "REALNAME_REDIS_URL": REDIS_URL,
        "REALNAME_REDIS_PREFIX": prefix,
    }
    with two_processes(settings, scale_database, tmp_path, prefix=prefix) as (_, b):
        async with api(b.base, key) as cb:
            before = cache_hits((await cb.get("/metrics")).text, "emergency_measures")
            for _ in range(3):
                created = await cb.post("/v1/verifications", json=new_person())
                assert created.status_code == 201, created.text
            after = cache_hits((await cb.get("/metrics")).text, "emergency_measures")
            assert after - before >= 2, "B did not hold the measures in memory"
            for action, status in (("suspend-issuance", 503), ("resume-issuance", 201)):
                done = await asyncio.to_thread(
                    run_cli,
                    settings,
                    "emergency",
                    action,
                    "--client-id",
                    client_id,
                    "--reason-code",
                    "security_incident",
                    **env,
                )
                assert done.returncode == 0, done.stderr
                answer = await cb.post("/v1/verifications", json=new_person())
                assert answer.status_code == status, (action, answer.text)
                if status == 503:
                    assert answer.json()["code"] == "issuance_suspended"


async def test_b_whose_subscription_was_lost_does_not_answer_from_entries_of_before(
    settings: Settings, scale_database: str, scale_engine: AsyncEngine, tmp_path: Path
) -> None:
    """When B's invalidation subscription is cut (as by a network failure or a Redis restart),
    B reads token states from the database until it has subscribed again, and then drops what
    it had cached: a change it may have missed meanwhile (here: a revocation written straight
    into the database, which tells nobody) is seen on its next introspection."""
    _, key = await new_client(settings, scale_engine, level="L1")
    prefix = f"scale{uuid.uuid4().hex}"
    with two_processes(settings, scale_database, tmp_path, prefix=prefix) as (a, b):
        async with api(a.base, key) as ca, api(b.base, key) as cb:
            _, token = await verified_token(ca)
            for _ in range(3):
                answer = (await cb.post("/v1/tokens/introspect", json={"token": token})).json()
                assert answer["active"] is True
            page = (await cb.get("/metrics")).text
            subscriptions = metric(page, SUBSCRIPTIONS)
            assert metric(page, "realname_cache_invalidation_subscribed") == 1
            assert cache_hits(page, "token_state") >= 2

            assert kill_redis_clients(REDIS_URL, f"{prefix}|invalidations") == 2  # A's and B's
            for _ in range(400):  # B subscribes again (and drops its entries) within seconds
                if metric((await cb.get("/metrics")).text, SUBSCRIPTIONS) > subscriptions:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("B did not subscribe again")
            async with scale_engine.begin() as conn:
                await conn.execute(
                    text("UPDATE service_tokens SET revoked_at = now() WHERE revoked_at IS NULL")
                )

            answer = (await cb.post("/v1/tokens/introspect", json={"token": token})).json()
            assert answer == {"active": False}


SUBSCRIPTIONS = "realname_cache_invalidation_subscriptions_total"
