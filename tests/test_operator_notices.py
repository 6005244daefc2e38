"""Operators hear at once of bulk-access blocks and emergency actions, by a signed POST."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from standardwebhooks import Webhook

from app.runtime import Runtime
from app.worker import Worker
from tests.test_admin_api import admin_token, bearer, sign_in
from tests.test_hardening import make_admin_name, seed_verifications
from tests.webhook_receiver import Receiver, receiver

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
async def operators(runtime: Runtime) -> AsyncIterator[Receiver]:
    """A receiver on loopback that the running service sends operator notices to."""
    settings = runtime.settings
    async with receiver() as r:
        runtime.settings = settings.model_copy(
            update={"operator_webhook_url": r.url, "operator_webhook_secret": SecretStr(SECRET)}
        )
        try:
            yield r
        finally:
            runtime.settings = settings


def notices(r: Receiver) -> list[dict[str, Any]]:
    """Every notice received, each verified with the official Standard Webhooks library."""
    out = []
    for got in r.received:
        Webhook(SECRET).verify(got.body, got.headers)
        out.append(json.loads(got.body))
    return out


async def block_an_auditor(http: httpx.AsyncClient, runtime: Runtime, make_client: Any) -> None:
    client_id, _ = await make_client("test")
    await seed_verifications(runtime, client_id, runtime.settings.admin_records_per_hour + 5)
    name = await make_admin_name(runtime, "auditor")
    token = str((await sign_in(http, name)).json()["token"])
    r = await http.get("/v1/admin/verifications", params={"limit": 100}, headers=bearer(token))
    assert r.json()["code"] == "bulk_access_blocked"


async def test_a_bulk_access_block_is_sent_to_the_operators_signed(
    http: httpx.AsyncClient,
    runtime: Runtime,
    make_client: Any,
    worker: Worker,
    operators: Receiver,
) -> None:
    """A blocked admin is reported by a Standard Webhooks POST naming the admin and the audit seq,
    with no personal data."""
    await block_an_auditor(http, runtime, make_client)
    await worker.run_once()
    await operators.wait_for(1)
    [notice] = notices(operators)
    assert notice["type"] == "admin.bulk_access_blocked"
    assert notice["id"].startswith("ntc_")
    assert notice["data"]["admin_id"].startswith("adm_")
    assert notice["data"]["records"] > notice["data"]["limit_per_hour"]
    async with runtime.engine.connect() as conn:
        seq = (
            await conn.execute(
                text("SELECT seq FROM audit_events WHERE action = 'admin.bulk_access_blocked'")
            )
        ).scalar_one()
    assert notice["data"]["audit_seq"] == seq
    assert set(notice["data"]) == {"admin_id", "what", "records", "limit_per_hour", "audit_seq"}


async def test_an_emergency_action_is_sent_to_the_operators(
    http: httpx.AsyncClient, runtime: Runtime, worker: Worker, operators: Receiver
) -> None:
    """An emergency suspension is reported with its reason code, scope and actor."""
    admin = await admin_token(http, runtime, "admin")
    r = await http.post(
        "/v1/admin/emergency/suspend-issuance", json={"reason_code": "drill"}, headers=bearer(admin)
    )
    assert r.status_code == 200, r.text
    await worker.run_once()
    await operators.wait_for(1)
    [notice] = notices(operators)
    assert notice["type"] == "emergency.suspend-issuance"
    assert notice["data"]["reason_code"] == "drill"
    assert notice["data"]["scope"] == "*"
    assert notice["data"]["actor_type"] == "admin"


async def test_a_notice_the_operators_did_not_take_is_sent_again(
    http: httpx.AsyncClient, runtime: Runtime, worker: Worker, operators: Receiver
) -> None:
    """A notice answered 500 stays queued and goes again with the same id."""
    operators.script = ["500"]
    admin = await admin_token(http, runtime, "admin")
    await http.post(
        "/v1/admin/emergency/revoke-tokens", json={"reason_code": "drill"}, headers=bearer(admin)
    )
    await worker.run_once()
    await operators.wait_for(1)
    async with runtime.engine.begin() as conn:
        await conn.execute(
            text("UPDATE outbox_jobs SET run_after = CURRENT_TIMESTAMP WHERE done_at IS NULL")
        )
    await worker.run_once()
    await operators.wait_for(2)
    first, again = notices(operators)
    assert first["id"] == again["id"]
    assert again["type"] == "emergency.revoke-tokens"


async def test_without_an_operator_webhook_nothing_is_queued(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any
) -> None:
    """Unset, a block is audited and counted only: no notice job is written."""
    await block_an_auditor(http, runtime, make_client)
    async with runtime.engine.connect() as conn:
        n = (
            await conn.execute(
                text("SELECT count(*) FROM outbox_jobs WHERE kind = 'operator_notice'")
            )
        ).scalar_one()
    assert n == 0
