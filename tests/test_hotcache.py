"""The hot-path caches (app/hotcache.py): what they spare the database, and that a revocation
is never hidden behind them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from app.hotcache import EpochNotMoved, TokenState, TokenStates
from app.runtime import Runtime
from app.worker import Worker
from tests.conftest import auth
from tests.support import kill_redis_clients, listening
from tests.test_tokens import introspect, token_for, verified


@contextmanager
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """Collect the SQL statements ``runtime`` sends while the block runs."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)


async def test_repeated_introspection_spares_the_database(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any, worker: Worker
) -> None:
    """The second introspection of a token does not verify the signature again; with Redis
    (pushed invalidation) it reads nothing from the database at all, without Redis it
    reads only the API key and the token's state."""
    _, key = await make_client("test", level="L1")
    v = await verified(http, key, worker)
    token = await token_for(http, key, v["id"])
    assert (await introspect(http, key, token))["active"] is True
    with statements(runtime) as seen:
        assert (await introspect(http, key, token))["active"] is True
    reads = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    if runtime.settings.redis_url:
        assert reads == []
        assert not any("api_keys" in s for s in seen)
    else:
        assert len(reads) == 2, reads
        assert "api_keys" in reads[0]
        assert "service_tokens" in reads[1]


async def test_revocation_then_introspection_is_inactive_although_cached_active(
    http: httpx.AsyncClient, make_client: Any, worker: Worker
) -> None:
    """A token introspected (and cached) as active is inactive right after RFC 7009 revocation,
    and a token of another verification of the same client stays active."""
    _, key = await make_client("test", level="L1")
    first = await verified(http, key, worker)
    token = await token_for(http, key, first["id"])
    other = await token_for(http, key, first["id"])
    for t in (token, other):
        assert (await introspect(http, key, t))["active"] is True
    r = await http.post("/v1/tokens/revoke", json={"token": token}, headers=auth(key))
    assert r.status_code == 200
    assert await introspect(http, key, token) == {"active": False}
    assert (await introspect(http, key, other))["active"] is True


async def test_a_state_read_before_another_process_changed_it_is_not_served(
    runtime: Runtime,
) -> None:
    """An entry read before another process published a change is not served after that
    process was answered, even when stored late (without Redis nothing is cached at all)."""
    prefix = f"{runtime.settings.redis_prefix}:t{uuid.uuid4().hex}"
    active = TokenState("ver_1", revoked=False, status="verified", expires_at=None)
    async with listening(runtime, prefix) as mine, listening(runtime, prefix) as theirs:
        states, other = TokenStates(mine, 30), TokenStates(theirs, 30)
        before = states.epoch()
        states.put("cli_1:tok_1", before, active)
        assert states.get("cli_1:tok_1", states.epoch()) == (active if before is not None else None)
        assert states.enabled is (runtime.settings.redis_url is not None)

        await other.bump()  # returns once this process has acknowledged

        assert states.get("cli_1:tok_1", states.epoch()) is None
        states.put("cli_1:tok_1", before, active)  # a database read that began before
        assert states.get("cli_1:tok_1", states.epoch()) is None


async def test_a_lost_subscription_serves_nothing_and_never_revives_old_entries(
    runtime: Runtime,
) -> None:
    """While the invalidation subscription is down nothing is served from the cache, and
    entries from before the loss are not served once it is back (changes may have been
    missed meanwhile)."""
    prefix = f"{runtime.settings.redis_prefix}:lost{uuid.uuid4().hex}"
    active = TokenState("ver_1", revoked=False, status="verified", expires_at=None)
    async with listening(runtime, prefix) as bus:
        states = TokenStates(bus, 30)
        if not bus.enabled:
            assert states.epoch() is None
            return
        states.put("cli_1:tok_1", states.epoch(), active)
        assert states.get("cli_1:tok_1", states.epoch()) == active
        assert runtime.settings.redis_url is not None

        assert kill_redis_clients(runtime.settings.redis_url, bus.client_name) == 1
        async with asyncio.timeout(5):  # the loss is seen on the subscription's next read
            await bus.lost()
        assert states.epoch() is None

        assert await bus.ready()
        assert states.get("cli_1:tok_1", states.epoch()) is None


async def test_revocation_that_cannot_reach_other_processes_answers_503_then_retry_works(
    http: httpx.AsyncClient,
    runtime: Runtime,
    make_client: Any,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When Redis cannot be told of a committed revocation, the caller gets 503 (not 200: the
    revocation is not yet in force everywhere); the retry tells Redis and answers 200."""
    _, key = await make_client("test", level="L1")
    v = await verified(http, key, worker)
    token = await token_for(http, key, v["id"])
    assert (await introspect(http, key, token))["active"] is True

    async def unreachable(self: TokenStates) -> None:
        raise EpochNotMoved

    with monkeypatch.context() as patched:
        patched.setattr(TokenStates, "bump", unreachable)
        r = await http.post("/v1/tokens/revoke", json={"token": token}, headers=auth(key))
    if runtime.token_states.enabled:
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "service_unavailable"
        assert r.headers["Retry-After"] == "1"
    else:  # without Redis there is nobody to tell
        assert r.status_code == 200
    retry = await http.post("/v1/tokens/revoke", json={"token": token}, headers=auth(key))
    assert retry.status_code == 200
    assert await introspect(http, key, token) == {"active": False}


async def test_a_busy_clients_quota_is_counted_from_leases_and_still_holds(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Redis, a client allowed 200 requests a minute is counted in leases of 2 (one
    Redis call per two requests) and still gets exactly 200; without Redis, one by one."""
    limits = runtime.limits
    calls: list[int] = []
    hit = limits.client_limiter.hit

    async def counted(*args: Any, cost: int = 1) -> bool:
        calls.append(cost)
        return await hit(*args, cost=cost)

    monkeypatch.setattr(limits.client_limiter, "hit", counted)
    client_id = f"cli_{uuid.uuid4().hex}"

    answers = [await limits.hit_client(client_id, 200) for _ in range(201)]

    assert answers[:200] == [None] * 200
    refusal = answers[200]
    assert refusal is not None
    assert 1 <= refusal.retry_after <= 60
    if limits.redis is None:
        assert calls == [1] * 201
    else:
        assert calls[:100] == [2] * 100
        assert len(calls) <= 102  # then the last lease is refused, and one by one
