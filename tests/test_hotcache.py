"""The hot-path caches (app/hotcache.py): what they spare the database, and that a revocation
is never hidden behind them."""

from __future__ import annotations

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
    (shared revocation epochs) it reads nothing from the database at all, without Redis it
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


async def test_a_state_read_under_an_older_epoch_is_not_served(runtime: Runtime) -> None:
    """An entry stored under the epoch read before a revocation committed is not used once the
    revocation has bumped the epoch (without Redis nothing is cached at all)."""
    states = TokenStates(runtime.limits.redis, runtime.settings.redis_prefix + ":t", 30)
    active = TokenState("ver_1", revoked=False, status="verified", expires_at=None)
    before = await states.epoch()
    states.put("cli_1:tok_1", before, active)
    assert states.get("cli_1:tok_1", await states.epoch()) == (active if before else None)
    # Another process revokes: it bumps the shared epoch (here: a second instance).
    await TokenStates(runtime.limits.redis, runtime.settings.redis_prefix + ":t", 30).bump()
    after = await states.epoch()
    assert states.get("cli_1:tok_1", after) is None
    assert states.enabled is (runtime.settings.redis_url is not None)


async def test_a_lost_epoch_key_never_revives_old_entries(runtime: Runtime) -> None:
    """If Redis loses the epoch (a restart without persistence, eviction), entries stored
    under the old value are not served again: epochs are random, not a counter."""
    prefix = runtime.settings.redis_prefix + ":lost"
    states = TokenStates(runtime.limits.redis, prefix, 30)
    await states.bump()
    before = await states.epoch()
    active = TokenState("ver_1", revoked=False, status="verified", expires_at=None)
    states.put("cli_1:tok_1", before, active)
    if runtime.limits.redis is None:
        assert before is None
        return
    await runtime.limits.redis.delete(f"{prefix}|token-epoch")
    again = await states.epoch()
    assert again is not None
    assert again != before
    assert states.get("cli_1:tok_1", again) is None


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
