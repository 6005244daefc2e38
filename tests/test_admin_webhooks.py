"""Admins see clients' endpoints, failed deliveries and attempts, and may redeliver (audited,
admin role only), through the admin API and the admin UI."""

from __future__ import annotations

from typing import Any

import httpx
from sqlmodel import select

from app.db import session_scope
from app.models import AuditEvent
from app.runtime import Runtime
from app.worker import Worker
from tests.conftest import auth
from tests.test_admin_api import admin_token, bearer
from tests.test_webhooks import begin, register, retry_now
from tests.ui.test_ui_pages import csrf_of, make_admin, sign_in
from tests.webhook_receiver import Receiver, receiver


async def give_up(http: httpx.AsyncClient, key: str, worker: Worker, runtime: Runtime) -> None:
    """One verification whose delivery fails on every attempt of the schedule."""
    await begin(http, key, worker)
    for _ in range(10):
        await retry_now(runtime)
        await worker.run_once()


async def failed_deliveries(http: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    r = await http.get("/v1/admin/webhook-deliveries", headers=bearer(token))
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def test_admins_see_failed_deliveries_and_redeliver_them(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """A delivery that gave up is listed; an admin's redeliver sends the same webhook-id once
    more and is audited."""
    r: Receiver
    async with receiver(default="500") as r:
        endpoint = await register(http, api_key, r.url)
        await give_up(http, api_key, worker, runtime)
        token = await admin_token(http, runtime, "admin")
        (failed,) = await failed_deliveries(http, token)
        assert failed["attempts"] == 11
        assert failed["endpoint_id"] == endpoint["id"]
        r.default = "200"
        sent = await http.post(
            f"/v1/admin/webhook-deliveries/{failed['id']}/redeliver", headers=bearer(token)
        )
        assert sent.status_code == 202, sent.text
        await worker.run_until_idle()
    assert await failed_deliveries(http, token) == []
    assert len({got.headers["webhook-id"] for got in r.received}) == 1
    assert len(r.received) == 12
    async with session_scope(runtime.sessions) as session:
        audited = (
            await session.execute(
                select(AuditEvent).where(AuditEvent.action == "webhook_delivery.redelivered")
            )
        ).scalar_one()
    assert audited.subject_id == failed["id"]
    assert audited.actor_type == "admin"


async def test_only_admins_may_redeliver(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Reviewers and auditors read deliveries but get 403 insufficient_role on redeliver."""
    async with receiver(default="500") as r:
        await register(http, api_key, r.url)
        await give_up(http, api_key, worker, runtime)
    for role in ("reviewer", "auditor"):
        token = await admin_token(http, runtime, role)
        (failed,) = await failed_deliveries(http, token)
        refused = await http.post(
            f"/v1/admin/webhook-deliveries/{failed['id']}/redeliver", headers=bearer(token)
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "insufficient_role"


async def test_admins_list_endpoints_and_attempts_without_secrets(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """The endpoint list and the attempts carry no secret and no payload."""
    async with receiver() as r:
        endpoint = await register(http, api_key, r.url)
        await begin(http, api_key, worker)
    token = await admin_token(http, runtime, "auditor")
    endpoints = await http.get("/v1/admin/webhook-endpoints", headers=bearer(token))
    attempts = await http.get("/v1/admin/webhook-attempts", headers=bearer(token))
    assert [e["id"] for e in endpoints.json()] == [endpoint["id"]]
    assert endpoint["secret"] not in endpoints.text + attempts.text
    assert [a["status_code"] for a in attempts.json()["data"]] == [200]


async def test_the_ui_page_lists_and_redelivers(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """/admin/webhooks shows a failed delivery; its Redeliver form queues it again."""
    async with receiver(default="500") as r:
        await register(http, api_key, r.url)
        await give_up(http, api_key, worker, runtime)
        csrf = await sign_in(http, await make_admin(runtime, "admin"))
        page = await http.get("/admin/webhooks")
        assert page.status_code == 200
        assert "Failed deliveries" in page.text
        action = page.text.split('action="/admin/webhook-deliveries/', 1)[1].split('"', 1)[0]
        done = await http.post(
            f"/admin/webhook-deliveries/{action}", data={"csrf_token": csrf_of(page) or csrf}
        )
        assert done.status_code == 303
        again = await http.get(done.headers["location"])
        assert "Queued again" in again.text
        r.default = "200"
        await worker.run_until_idle()
    assert len(r.received) == 12
    assert "No failed deliveries." in (await http.get("/admin/webhooks")).text


async def test_an_integrator_key_cannot_reach_the_admin_webhook_routes(
    http: httpx.AsyncClient, api_key: str
) -> None:
    """Integrator keys get 403 on the admin webhook API."""
    r = await http.get("/v1/admin/webhook-deliveries", headers=auth(api_key))
    assert r.status_code == 403
