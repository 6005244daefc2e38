"""Idempotency-Key on every integrator POST (code submit, resend, token issue, revoke) and on
erasure, with the semantics of POST /v1/verifications; declared in the OpenAPI document."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import col

from app.main import create_app
from app.models import IdempotencyKey, OutboxJob
from app.runtime import Runtime
from app.worker import Worker
from tests.conftest import auth
from tests.test_lifecycle import inbox_code, start, submit
from tests.test_tokens import verified

#: POSTs that answer about the present rather than change anything: a replay would be stale.
NOT_IDEMPOTENT = {"/v1/tokens/introspect"}


def key(value: str, api_key: str) -> dict[str, str]:
    return auth(api_key, **{"Idempotency-Key": value})


@pytest.fixture
async def l2_key(make_client: Any) -> str:
    _, api_key = await make_client("test", level="L2")
    return str(api_key)


async def test_retried_token_issue_returns_the_same_token(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """The same key on POST …/tokens replays the first token, marked Idempotent-Replayed."""
    v = await verified(http, api_key, worker)
    first = await http.post(f"/v1/verifications/{v['id']}/tokens", headers=key("t-1", api_key))
    again = await http.post(f"/v1/verifications/{v['id']}/tokens", headers=key("t-1", api_key))
    other = await http.post(f"/v1/verifications/{v['id']}/tokens", headers=key("t-2", api_key))
    assert first.status_code == again.status_code == 201
    assert again.json()["access_token"] == first.json()["access_token"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.json()["access_token"] != first.json()["access_token"]


async def test_stored_token_is_not_readable_in_the_database(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """The stored answer of a token issue is sealed: the token is not in the table."""
    v = await verified(http, api_key, worker)
    r = await http.post(f"/v1/verifications/{v['id']}/tokens", headers=key("t-3", api_key))
    async with runtime.sessions() as session:
        stored = (await session.execute(select(col(IdempotencyKey.response_body)))).scalars().all()
    token = r.json()["access_token"]
    assert stored
    assert all(
        body is not None and token not in body and token.split(".")[1] not in body
        for body in stored
    )


async def test_retried_resend_sends_once(
    http: httpx.AsyncClient, l2_key: str, worker: Worker, runtime: Runtime
) -> None:
    """The same key on POST …/sms-code/resend replays the 202 and queues no second SMS."""
    v = await start(http, l2_key, worker)
    await runtime.limits.reset()  # the first code used this phone's one SMS a minute
    first = await http.post(
        f"/v1/verifications/{v['id']}/sms-code/resend", headers=key("r-1", l2_key)
    )
    async with runtime.sessions() as session:
        jobs = select(func.count()).select_from(OutboxJob)
        before = (await session.execute(jobs)).scalar_one()
    again = await http.post(
        f"/v1/verifications/{v['id']}/sms-code/resend", headers=key("r-1", l2_key)
    )
    async with runtime.sessions() as session:
        after = (await session.execute(jobs)).scalar_one()
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert after == before


async def test_retried_wrong_code_counts_one_attempt(
    http: httpx.AsyncClient, l2_key: str, worker: Worker
) -> None:
    """A retried wrong code (same key) replays code_incorrect without using another attempt."""
    v = await start(http, l2_key, worker)
    right = await inbox_code(http, l2_key, v["id"])
    wrong = "000000" if right != "000000" else "111111"
    path = f"/v1/verifications/{v['id']}/sms-code"
    first = await http.post(path, json={"code": wrong}, headers=key("c-1", l2_key))
    again = await http.post(path, json={"code": wrong}, headers=key("c-1", l2_key))
    assert first.status_code == again.status_code == 422
    assert again.json() == first.json()
    assert again.headers["content-type"].startswith("application/problem+json")
    assert (await submit(http, l2_key, v["id"], right)).json()["status"] == "verified"
    assert first.json()["attempts_remaining"] == 4


async def test_same_key_with_another_code_is_a_conflict(
    http: httpx.AsyncClient, l2_key: str, worker: Worker
) -> None:
    """The same key with another body on the code submit is 422 idempotency_conflict."""
    v = await start(http, l2_key, worker)
    path = f"/v1/verifications/{v['id']}/sms-code"
    await http.post(path, json={"code": "000001"}, headers=key("c-2", l2_key))
    r = await http.post(path, json={"code": "000002"}, headers=key("c-2", l2_key))
    assert (r.status_code, r.json()["code"]) == (422, "idempotency_conflict")


async def test_revoke_takes_a_key_with_a_form_body(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """A retried form-encoded revocation with the same key is replayed."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    first = await http.post(
        "/v1/tokens/revoke", content="token=abc", headers={**key("v-1", api_key), **form}
    )
    again = await http.post(
        "/v1/tokens/revoke", content="token=abc", headers={**key("v-1", api_key), **form}
    )
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_a_malformed_key_is_refused(http: httpx.AsyncClient, api_key: str) -> None:
    """A key with characters outside printable ASCII is 400 invalid_idempotency_key."""
    r = await http.post("/v1/verifications/ver_x/sms-code/resend", headers=key("a b", api_key))
    assert (r.status_code, r.json()["code"]) == (400, "invalid_idempotency_key")


async def test_every_integrator_post_declares_the_key(runtime: Runtime) -> None:
    """Every POST taking an API key (introspection aside) declares Idempotency-Key and its
    problems in the OpenAPI document."""
    schema = create_app(runtime=runtime).openapi()
    missing = []
    for path, operations in schema["paths"].items():
        post = operations.get("post")
        if post is None or path in NOT_IDEMPOTENT:
            continue
        if {"ApiKey": []} not in post.get("security", []):
            continue
        names = {p["name"] for p in post.get("parameters", [])}
        described = " ".join(r.get("description", "") for r in post["responses"].values())
        if "Idempotency-Key" not in names or "`idempotency_conflict`" not in described:
            missing.append(path)
    assert missing == []
