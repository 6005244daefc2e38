"""Events: one per status change and per token revocation, in the change's transaction;
listed at GET /v1/events oldest first; erasure reaches them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, update
from sqlmodel import col, select

from app.db import session_scope
from app.models import Event, Status, Verification
from app.models._types import utcnow
from app.runtime import Runtime
from app.services import lifecycle
from app.worker import Worker
from tests.conftest import auth
from tests.support import new_person
from tests.test_intake import GOOD
from tests.test_lifecycle import inbox_code, start, submit


async def events_of(http: httpx.AsyncClient, key: str, **params: Any) -> list[dict[str, Any]]:
    r = await http.get("/v1/events", params=params, headers=auth(key))
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


@pytest.fixture
async def l2_key(make_client: Any) -> str:
    _, key = await make_client("test", level="L2")
    return str(key)


@pytest.mark.parametrize(
    ("name", "status"),
    [("张三", "verified"), ("不一致", "rejected"), ("服务异常", "needs_review")],
)
async def test_each_outcome_of_the_checks_is_one_event(
    http: httpx.AsyncClient, api_key: str, worker: Worker, name: str, status: str
) -> None:
    """A verification's outcome (verified, rejected, needs_review) is announced by one event."""
    v = await start(http, api_key, worker, real_name=name)
    assert v["status"] == status
    listed = await events_of(http, api_key)
    assert [e["type"] for e in listed] == [f"verification.{status}"]
    event = listed[0]
    assert event["id"].startswith("evt_")
    assert event["livemode"] is False
    assert event["data"]["verification_id"] == v["id"]
    assert event["data"]["external_user_id"] == GOOD["external_user_id"]
    assert event["data"]["status"] == status
    assert event["data"]["level"] == "L1"


async def test_code_flow_announces_awaiting_code_then_verified(
    http: httpx.AsyncClient, l2_key: str, worker: Worker
) -> None:
    """L2: awaiting_code, then verified after the right code, in that order."""
    v = await start(http, l2_key, worker)
    code = await inbox_code(http, l2_key, v["id"])
    assert (await submit(http, l2_key, v["id"], code)).status_code == 200
    listed = await events_of(http, l2_key)
    assert [e["type"] for e in listed] == ["verification.awaiting_code", "verification.verified"]


async def test_wrong_codes_announce_locked(
    http: httpx.AsyncClient, l2_key: str, worker: Worker
) -> None:
    """Five wrong codes lock the verification, and the lock is an event."""
    v = await start(http, l2_key, worker)
    code = await inbox_code(http, l2_key, v["id"])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        await submit(http, l2_key, v["id"], wrong)
    types = [e["type"] for e in await events_of(http, l2_key)]
    assert types == ["verification.awaiting_code", "verification.locked"]


async def test_expiry_is_announced(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """A verification past its time that the worker expires yields verification.expired."""
    v = await start(http, l2_key, worker)
    async with session_scope(runtime.sessions) as session:
        await session.execute(
            update(Verification)
            .where(col(Verification.id) == v["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    await worker.sweep()
    types = [e["type"] for e in await events_of(http, l2_key)]
    assert types[-1] == "verification.expired"


async def test_client_token_revoke_is_announced_with_its_jti(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """Revoking a token emits token.revoked carrying the token's jti."""
    v = await start(http, api_key, worker)
    token = (await http.post(f"/v1/verifications/{v['id']}/tokens", headers=auth(api_key))).json()
    r = await http.post(
        "/v1/tokens/revoke", json={"token": token["access_token"]}, headers=auth(api_key)
    )
    assert r.status_code == 200, r.text
    last = (await events_of(http, api_key))[-1]
    assert last["type"] == "token.revoked"
    assert last["data"]["jti"].startswith("tok_")
    assert last["data"]["verification_id"] == v["id"]


async def test_revoking_a_verification_announces_it_and_its_tokens(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Leaving verified emits verification.revoked and token.revoked for each live token."""
    v = await start(http, api_key, worker)
    await http.post(f"/v1/verifications/{v['id']}/tokens", headers=auth(api_key))
    async with session_scope(runtime.sessions) as session:
        row = await session.get(Verification, v["id"])
        assert row is not None
        await lifecycle.transition(
            session, row, Status.REVOKED, expect=[Status.VERIFIED], reason="admin_revoked"
        )
    types = [e["type"] for e in await events_of(http, api_key)]
    assert types == ["verification.verified", "verification.revoked", "token.revoked"]


async def test_a_failed_transition_leaves_no_event(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """An event commits with its change or not at all: a rolled-back move leaves none."""
    v = await start(http, api_key, worker)

    async def move_then_fail() -> None:
        async with session_scope(runtime.sessions) as session:
            row = await session.get(Verification, v["id"])
            assert row is not None
            await lifecycle.transition(session, row, Status.REVOKED, expect=[Status.VERIFIED])
            raise RuntimeError("the transaction fails after the move")

    with pytest.raises(RuntimeError):
        await move_then_fail()
    async with session_scope(runtime.sessions) as session:
        count = (await session.execute(select(func.count()).select_from(Event))).scalar_one()
    assert count == 1  # verification.verified only


async def test_erasure_is_announced_and_redacts_earlier_events(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """After DELETE, every event of that user shows [erased] instead of the user id."""
    v = await start(http, api_key, worker)
    await http.post(f"/v1/verifications/{v['id']}/tokens", headers=auth(api_key))
    assert (await http.delete(f"/v1/verifications/{v['id']}", headers=auth(api_key))).is_success
    listed = await events_of(http, api_key)
    assert [e["type"] for e in listed] == [
        "verification.verified",
        "token.revoked",
        "verification.erased",
    ]
    assert {e["data"]["external_user_id"] for e in listed} == {"[erased]"}


async def test_events_page_oldest_first_with_a_cursor(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """`after` and `limit` walk the events in order without repeats or gaps."""
    for n in range(3):
        await start(http, api_key, worker, **new_person(external_user_id=f"user-{n}"))
    everything = await events_of(http, api_key)
    first = (await http.get("/v1/events", params={"limit": 2}, headers=auth(api_key))).json()
    assert first["has_more"] is True
    rest = (
        await http.get("/v1/events", params={"after": first["next_after"]}, headers=auth(api_key))
    ).json()
    assert rest["has_more"] is False
    assert [e["id"] for e in first["data"] + rest["data"]] == [e["id"] for e in everything]
    assert len(everything) == 3


async def test_clients_see_only_their_own_events(
    http: httpx.AsyncClient, api_key: str, make_client: Any, worker: Worker
) -> None:
    """Another client's events are neither listed nor usable as a cursor."""
    await start(http, api_key, worker)
    mine = await events_of(http, api_key)
    _, other = await make_client("test", level="L1", name="Other")
    assert await events_of(http, other) == []
    r = await http.get("/v1/events", params={"after": mine[0]["id"]}, headers=auth(other))
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


async def test_events_older_than_the_retention_are_not_listed(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Events are listed for 30 days."""
    await start(http, api_key, worker)
    async with session_scope(runtime.sessions) as session:
        await session.execute(update(Event).values(created_at=utcnow() - timedelta(days=31)))
    assert await events_of(http, api_key) == []


def test_the_schema_names_every_event_type_the_service_emits() -> None:
    """The OpenAPI enumerations of event types are the service's own list."""
    from typing import get_args

    from app.schemas.events import EventType, SubscribableType
    from app.services.events import EVENT_TYPES, PING

    assert list(get_args(EventType)) == list(EVENT_TYPES)
    assert list(get_args(SubscribableType)) == [t for t in EVENT_TYPES if t != PING]
