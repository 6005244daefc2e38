"""Over real HTTP against `realname serve` (dev, in-process worker): a receiver on 127.0.0.1
gets every outcome as a signed event, a failed delivery comes back with the same webhook-id, and
GET /v1/events lists the same events in the same order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from app.runtime import Runtime
from tests.support import new_person, run_cli, serve
from tests.webhook_receiver import receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    with serve(runtime.settings, log_path=tmp_path / "serve.log") as base:
        yield base


async def wait_status(client: httpx.AsyncClient, vid: str, *statuses: str) -> dict[str, object]:
    async with asyncio.timeout(30):
        while True:
            got = (await client.get(f"/v1/verifications/{vid}")).json()
            if got["status"] in statuses:
                return dict(got)
            await asyncio.sleep(0.2)


async def test_a_receiver_on_loopback_gets_signed_events_and_a_redelivery(
    server: str, runtime: Runtime
) -> None:
    """verified, rejected, erased and a token revocation arrive signed; the first delivery
    fails and returns with the same webhook-id; the events API agrees in order."""
    key = json.loads(
        run_cli(
            runtime.settings,
            "clients",
            "create",
            "--name",
            "hooks",
            "--mode",
            "test",
            "--level",
            "L1",
        ).stdout
    )["api_key"]
    async with (
        receiver(script=["500"]) as r,
        httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        made = await client.post("/v1/webhook-endpoints", json={"url": r.url})
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        ok = await client.post("/v1/verifications", json=new_person())
        await wait_status(client, ok.json()["id"], "verified")
        bad = await client.post("/v1/verifications", json=new_person(real_name="查无此人"))
        await wait_status(client, bad.json()["id"], "rejected")
        token = (await client.post(f"/v1/verifications/{ok.json()['id']}/tokens")).json()
        await client.post("/v1/tokens/revoke", json={"token": token["access_token"]})
        await client.delete(f"/v1/verifications/{bad.json()['id']}")
        await r.wait_for(5, seconds=30)  # 4 events, the first one twice (5 s back-off)
        listed = (await client.get("/v1/events")).json()["data"]
    payloads = [Webhook(secret).verify(got.body, got.headers) for got in r.received]
    ids = [got.headers["webhook-id"] for got in r.received]
    assert len(ids) == 5
    assert ids.count(listed[0]["id"]) == 2  # the redelivery of the failed first attempt
    assert [e["type"] for e in listed] == [
        "verification.verified",
        "verification.rejected",
        "token.revoked",
        "verification.erased",
    ]
    assert {p["id"] for p in payloads} == {e["id"] for e in listed}
