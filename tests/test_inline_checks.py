"""Checks whose verifiers answer in process (the sandbox registry) run in the registration's
own transaction (``REALNAME_INLINE_CHECKS``, on by default): the answer carries the outcome and
nothing waits for the worker. Checks that need a provider are still queued."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.runtime import Runtime
from app.worker import Worker
from tests.conftest import auth
from tests.test_admin_api import admin_token
from tests.test_emergency import act
from tests.test_intake import GOOD


async def scalar(runtime: Runtime, sql: str, **params: Any) -> Any:
    async with runtime.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def jobs(runtime: Runtime, kind: str) -> int:
    return int(
        await scalar(runtime, "SELECT count(*) FROM outbox_jobs WHERE kind = :kind", kind=kind)
    )


async def actions(runtime: Runtime, verification_id: str) -> list[str]:
    async with runtime.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT action FROM audit_events WHERE subject_id = :id ORDER BY seq"),
            {"id": verification_id},
        )
        return [str(r[0]) for r in rows]


async def test_l1_answer_is_the_outcome_and_nothing_is_queued(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, worker: Worker
) -> None:
    """An L1 registration with a test key answers ``verified``: the check, its audit, its
    event and its move were written by the registration's commit; the worker finds nothing."""
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["status"] == "verified"
    assert v["checks"] == [{"type": "id_registry", "status": "passed", "reason": None}]
    assert await jobs(runtime, "run_checks") == 0
    assert await actions(runtime, v["id"]) == ["verification.created", "verification.verified"]
    events = await http.get("/v1/events", headers=auth(api_key))
    assert [e["type"] for e in events.json()["data"]] == ["verification.verified"]
    assert await worker.run_until_idle() == 0
    got = await http.get(f"/v1/verifications/{v['id']}", headers=auth(api_key))
    assert got.json() == {**v, "consent": got.json()["consent"]}
    token = await http.post(f"/v1/verifications/{v['id']}/tokens", headers=auth(api_key))
    assert token.status_code == 201, token.text


async def test_l2_code_is_in_the_inbox_when_the_answer_arrives(
    http: httpx.AsyncClient, make_client: Any, runtime: Runtime
) -> None:
    """L2: the answer is ``awaiting_code`` with its next action, and the code is already in
    the sandbox inbox (delivered in the same transaction, no ``send_sms`` job); it verifies."""
    _, key = await make_client("test", level="L2")
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(key))
    v = r.json()
    assert v["status"] == "awaiting_code", r.text
    assert v["next_action"]["type"] == "submit_sms_code"
    assert await jobs(runtime, "send_sms") == 0
    inbox = await http.get(
        "/v1/sandbox/messages", params={"verification_id": v["id"]}, headers=auth(key)
    )
    [message] = inbox.json()["data"]
    checked = await http.post(
        f"/v1/verifications/{v['id']}/sms-code", json={"code": message["code"]}, headers=auth(key)
    )
    assert checked.json()["status"] == "verified", checked.text


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [("不一致", "rejected", "id_mismatch"), ("查无此人", "rejected", "id_not_found")],
)
async def test_definite_answers_are_final_at_once(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, name: str, status: str, reason: str
) -> None:
    """The registry's magic names answer in the registration: rejected, with the reason."""
    r = await http.post(
        "/v1/verifications", json={**GOOD, "real_name": name}, headers=auth(api_key)
    )
    v = r.json()
    assert (v["status"], v["checks"][0]["reason"]) == (status, reason), r.text
    assert await jobs(runtime, "run_checks") == 0


async def test_an_unavailable_registry_is_retried_by_the_worker(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, worker: Worker
) -> None:
    """``服务异常``: the first try runs in the registration and answers ``pending``; the retry
    is queued with back-off, and the worker's tries end in manual review."""
    r = await http.post(
        "/v1/verifications", json={**GOOD, "real_name": "服务异常"}, headers=auth(api_key)
    )
    v = r.json()
    assert v["status"] == "pending"
    assert v["checks"] == [
        {"type": "id_registry", "status": "unavailable", "reason": "registry_unavailable"}
    ]
    assert await jobs(runtime, "run_checks") == 1
    await worker.run_until_idle()
    got = await http.get(f"/v1/verifications/{v['id']}", headers=auth(api_key))
    assert got.json()["status"] == "needs_review"


async def test_quarantined_sandbox_sender_queues_the_code(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any
) -> None:
    """Art. 25: with the sandbox sender quarantined the code is not delivered in the
    transaction; its send waits in the outbox like any held send."""
    _, key = await make_client("test", level="L2")
    admin = await admin_token(http, runtime, "admin")
    await act(
        http, admin, "quarantine-provider", reason_code="provider_compromised", provider="sandbox"
    )
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(key))
    assert r.json()["status"] == "awaiting_code"
    assert await jobs(runtime, "send_sms") == 1
    assert await scalar(runtime, "SELECT count(*) FROM sandbox_messages") == 0


async def test_live_clients_checks_are_queued(
    http: httpx.AsyncClient, make_client: Any, runtime: Runtime
) -> None:
    """A live key's verifiers call providers: its checks never run inside the registration."""
    _, key = await make_client("live", level="L1")
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(key))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending"
    assert await jobs(runtime, "run_checks") == 1


@pytest.mark.usefixtures("queued_checks")
async def test_switched_off_every_check_goes_to_the_worker(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, worker: Worker
) -> None:
    """``REALNAME_INLINE_CHECKS=false``: a test key's registration answers ``pending`` and the
    worker runs its check."""
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))
    assert r.json()["status"] == "pending"
    assert await jobs(runtime, "run_checks") == 1
    await worker.run_until_idle()
    got = await http.get(f"/v1/verifications/{r.json()['id']}", headers=auth(api_key))
    assert got.json()["status"] == "verified"


async def test_a_replayed_registration_gets_the_same_answer(
    http: httpx.AsyncClient, api_key: str
) -> None:
    """Idempotency-Key: the stored answer already holds the outcome."""
    headers = auth(api_key, **{"Idempotency-Key": "inline-1"})
    first = await http.post("/v1/verifications", json=GOOD, headers=headers)
    again = await http.post("/v1/verifications", json=GOOD, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    assert first.json()["status"] == "verified"
