"""Webhook delivery: signed per Standard Webhooks (checked with the official `standardwebhooks`
package), at least once with the same webhook-id, isolated per endpoint, and only to allowed
addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import col, select
from standardwebhooks import Webhook, WebhookVerificationError

from app.db import session_scope
from app.models import AuditEvent, Event, OutboxJob, WebhookDelivery, WebhookEndpoint
from app.models._types import utcnow
from app.runtime import Runtime
from app.services import deliveries, purge
from app.webhooks import transport, urls
from app.worker import Worker
from realname_sdk import webhooks as sdk_webhooks
from tests.conftest import auth
from tests.support import new_person
from tests.test_intake import GOOD
from tests.test_lifecycle import start
from tests.webhook_receiver import Receiver, receiver


async def register(http: httpx.AsyncClient, key: str, url: str, **body: Any) -> dict[str, Any]:
    r = await http.post("/v1/webhook-endpoints", json={"url": url, **body}, headers=auth(key))
    assert r.status_code == 201, r.text
    return dict(r.json())


def verified_payloads(r: Receiver, secret: str) -> list[dict[str, Any]]:
    """Every received body, verified with the reference library exactly as a receiver would."""
    return [Webhook(secret).verify(got.body, got.headers) for got in r.received]


async def begin(http: httpx.AsyncClient, key: str, worker: Worker, **body: Any) -> str:
    """Start a verification and do what is due now (its checks, then the first attempts of
    the deliveries), without waiting for retries."""
    r = await http.post("/v1/verifications", json={**GOOD, **body}, headers=auth(key))
    assert r.status_code == 201, r.text
    await worker.run_once()
    return str(r.json()["id"])


async def retry_now(runtime: Runtime) -> None:
    """Bring every scheduled retry forward (instead of waiting out the back-off)."""
    async with session_scope(runtime.sessions) as session:
        await session.execute(
            update(OutboxJob).where(col(OutboxJob.done_at).is_(None)).values(run_after=utcnow())
        )


async def test_deliveries_verify_with_the_standardwebhooks_library(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """A receiver checks each delivery with `standardwebhooks.Webhook(secret).verify`."""
    async with receiver() as r:
        endpoint = await register(http, api_key, r.url)
        assert endpoint["secret"].startswith("whsec_")
        v = await start(http, api_key, worker)
        await worker.run_until_idle()
        payloads = verified_payloads(r, endpoint["secret"])
    assert [p["type"] for p in payloads] == ["verification.verified"]
    assert payloads[0]["data"]["verification_id"] == v["id"]
    assert r.received[0].headers["webhook-id"] == payloads[0]["id"]
    assert r.received[0].path == "/hooks/realname"


async def test_an_endpoint_added_after_earlier_events_gets_the_very_next_one(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Events read the client's endpoints from the process's copy while its invalidation
    subscription holds; adding an endpoint drops that copy, so the next event reaches it."""
    await start(http, api_key, worker, **new_person())
    await start(http, api_key, worker, **new_person())  # with Redis: the second from the copy
    async with receiver() as r:
        endpoint = await register(http, api_key, r.url)
        v = await start(http, api_key, worker, **new_person())
        await worker.run_until_idle()
        payloads = verified_payloads(r, endpoint["secret"])
    assert [(p["type"], p["data"]["verification_id"]) for p in payloads] == [
        ("verification.verified", v["id"])
    ]


async def test_a_wrong_secret_does_not_verify(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """The signature is bound to the endpoint's secret: another secret fails verification."""
    async with receiver() as r:
        await register(http, api_key, r.url)
        await start(http, api_key, worker)
        other = (await register(http, api_key, r.url + "?other"))["secret"]
    first = r.received[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(first.body, first.headers)


async def test_a_failed_delivery_is_redelivered_with_the_same_webhook_id(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """A 500 is retried on the schedule; the retry carries the same webhook-id and body."""
    async with receiver(script=["500"]) as r:
        endpoint = await register(http, api_key, r.url)
        await begin(http, api_key, worker)
        assert len(r.received) == 1
        await retry_now(runtime)
        await worker.run_once()
        payloads = verified_payloads(r, endpoint["secret"])
    assert len(r.received) == 2
    assert r.received[0].headers["webhook-id"] == r.received[1].headers["webhook-id"]
    assert payloads[0] == payloads[1]
    listed = (
        await http.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=auth(api_key))
    ).json()["data"]
    assert [a["status_code"] for a in listed] == [200, 500]
    assert listed[1]["error"] == "http_500"
    assert listed[1]["next_retry_at"] is not None
    assert listed[0]["response_excerpt"] == "ok"


@pytest.mark.parametrize("misbehaviour", ["reset", "hang", "302"])
async def test_a_misbehaving_receiver_costs_only_its_own_retry(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime, misbehaviour: str
) -> None:
    """A reset, a hang past the timeout or a redirect is a failed attempt, retried later."""
    async with receiver(script=[misbehaviour]) as r:
        endpoint = await register(http, api_key, r.url)
        await begin(http, api_key, worker)
        async with session_scope(runtime.sessions) as session:
            delivery = (await session.execute(select(WebhookDelivery))).scalar_one()
        assert delivery.status == "pending"
        assert (
            delivery.last_error
            == {
                "reset": "connection_error",
                "hang": "timeout",
                "302": "redirect_refused",
            }[misbehaviour]
        )
        await retry_now(runtime)
        await worker.run_once()
    assert len(verified_payloads(r, endpoint["secret"])) == 2
    assert len({got.headers["webhook-id"] for got in r.received}) == 1


async def test_a_hanging_endpoint_does_not_delay_another_clients_deliveries(
    http: httpx.AsyncClient, make_client: Any, worker: Worker
) -> None:
    """While one client's endpoint hangs, another client's event arrives at once."""
    _, slow_key = await make_client("test", level="L1", name="Slow")
    _, fast_key = await make_client("test", level="L1", name="Fast")
    async with receiver(default="hang") as slow, receiver() as fast:
        await register(http, slow_key, slow.url)
        await register(http, fast_key, fast.url)
        for n in range(4):
            await http.post("/v1/verifications", json=new_person(), headers=auth(slow_key))
            del n
        await http.post("/v1/verifications", json=new_person(), headers=auth(fast_key))
        started = asyncio.get_running_loop().time()
        run = asyncio.create_task(worker.run_once())
        await fast.wait_for(1, seconds=5)
        fast_after = asyncio.get_running_loop().time() - started
        await run
    assert fast_after < 1.5  # the slow endpoint's timeout is 2 s
    # Deliveries to the hanging endpoint were held to its lane (2 at a time).
    assert len(slow.received) <= 2 * 2


async def test_a_worker_killed_mid_delivery_loses_no_event(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """If the worker dies while the receiver holds the request, the lease runs out and the
    same event is delivered again with the same webhook-id."""
    async with receiver(script=["hang"]) as r:
        endpoint = await register(http, api_key, r.url)
        await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))
        while (job := await worker.claim()) is not None:  # the checks, not the delivery
            await worker._handle(job)
        job = await worker.claim(webhooks=True)
        assert job is not None
        dying = asyncio.create_task(deliveries.deliver(runtime, job))
        await r.wait_for(1)
        dying.cancel()  # killed mid-request: nothing recorded
        await asyncio.gather(dying, return_exceptions=True)
        assert await worker.claim(webhooks=True) is None  # still leased
        async with session_scope(runtime.sessions) as session:
            await session.execute(
                update(OutboxJob).values(locked_until=utcnow() - timedelta(seconds=1))
            )
        await worker.run_once()
    payloads = verified_payloads(r, endpoint["secret"])
    assert len(payloads) == 2
    assert r.received[0].headers["webhook-id"] == r.received[1].headers["webhook-id"]


async def test_deliveries_after_an_erasure_carry_erased(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """An undelivered event of an erased user arrives with [erased] as the user id."""
    async with receiver(script=["500"]) as r:
        endpoint = await register(http, api_key, r.url)
        vid = await begin(http, api_key, worker)
        await http.delete(f"/v1/verifications/{vid}", headers=auth(api_key))
        await retry_now(runtime)
        await worker.run_until_idle()
        payloads = verified_payloads(r, endpoint["secret"])
    assert payloads[0]["data"]["external_user_id"] == GOOD["external_user_id"]  # before
    assert {p["data"]["external_user_id"] for p in payloads[1:]} == {"[erased]"}
    assert {p["type"] for p in payloads[1:]} == {"verification.verified", "verification.erased"}


async def test_payloads_carry_no_personal_data(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """No name, ID number, phone, mask or code appears in any delivered byte."""
    async with receiver() as r:
        await register(http, api_key, r.url)
        v = await start(http, api_key, worker)
        await http.post(f"/v1/verifications/{v['id']}/tokens", headers=auth(api_key))
        await http.delete(f"/v1/verifications/{v['id']}", headers=auth(api_key))
        await worker.run_until_idle()
    raw = b"".join(got.body + json.dumps(got.headers).encode() for got in r.received)
    assert len(r.received) == 3
    for value in (GOOD["real_name"], GOOD["id_number"], GOOD["phone"], "138****8000", "张*"):
        assert value.encode() not in raw
        assert value.encode("unicode_escape") not in raw


async def test_rotation_signs_with_both_secrets_for_a_day(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """After rotate-secret a delivery verifies with the old secret and with the new one."""
    async with receiver() as r:
        endpoint = await register(http, api_key, r.url)
        rotated = await http.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=auth(api_key)
        )
        assert rotated.status_code == 200, rotated.text
        await start(http, api_key, worker)
    new = rotated.json()["secret"]
    assert new != endpoint["secret"]
    assert len(r.received[0].headers["webhook-signature"].split(" ")) == 2
    assert verified_payloads(r, endpoint["secret"]) == verified_payloads(r, new)


async def test_ping_reaches_only_the_tested_endpoint(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """POST …/test sends a signed ping to that endpoint and to no other."""
    async with receiver() as r, receiver() as other:
        endpoint = await register(http, api_key, r.url)
        await register(http, api_key, other.url)
        sent = await http.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/test", headers=auth(api_key)
        )
        assert sent.status_code == 202, sent.text
        await worker.run_until_idle()
    (payload,) = verified_payloads(r, endpoint["secret"])
    assert payload["type"] == "ping"
    assert payload["id"] == sent.json()["event_id"]
    assert other.received == []


async def test_subscriptions_filter_event_types(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """An endpoint subscribed to some types receives only those."""
    async with receiver() as r:
        await register(http, api_key, r.url, events=["verification.rejected"])
        await start(http, api_key, worker)
        await start(http, api_key, worker, **new_person(real_name="不一致"))
    assert [json.loads(got.body)["type"] for got in r.received] == ["verification.rejected"]


async def test_endpoint_crud(http: httpx.AsyncClient, api_key: str, make_client: Any) -> None:
    """Endpoints are listed, read and deleted by their client only; secrets are not shown
    again."""
    created = await register(http, api_key, "http://127.0.0.1:9/hook")
    path = f"/v1/webhook-endpoints/{created['id']}"
    listed = (await http.get("/v1/webhook-endpoints", headers=auth(api_key))).json()["data"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in (await http.get(path, headers=auth(api_key))).json()
    _, other = await make_client("test", level="L1", name="Other")
    assert (await http.get(path, headers=auth(other))).status_code == 404
    assert (await http.delete(path, headers=auth(other))).status_code == 404
    assert (await http.delete(path, headers=auth(api_key))).status_code == 204
    assert (await http.get(path, headers=auth(api_key))).status_code == 404


async def test_a_sixth_endpoint_is_refused(http: httpx.AsyncClient, api_key: str) -> None:
    """At most five endpoints per client: the sixth is 422 too_many_endpoints."""
    for n in range(5):
        await register(http, api_key, f"http://127.0.0.1:9/hook{n}")
    r = await http.post(
        "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/six"}, headers=auth(api_key)
    )
    assert r.status_code == 422
    assert r.json()["code"] == "too_many_endpoints"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "not a url"}, "invalid_webhook_url"),
        ({"url": "ftp://example.com/hook"}, "invalid_webhook_url"),
        ({"url": "https://user:pw@example.com/hook"}, "invalid_webhook_url"),
        ({"url": "https://" + "a" * 2000 + ".com/"}, "invalid_webhook_url"),
        ({"url": "https://no-such-host.invalid/hook"}, "invalid_webhook_url"),
        ({"url": "http://127.0.0.1:9/h", "events": ["verification.nope"]}, "unknown_event_type"),
        ({"url": "http://127.0.0.1:9/h", "events": []}, "unknown_event_type"),
    ],
)
async def test_bad_endpoints_are_refused_with_stable_codes(
    http: httpx.AsyncClient, api_key: str, body: dict[str, Any], code: str
) -> None:
    """Malformed URLs and unknown event types are 422 with their code."""
    r = await http.post("/v1/webhook-endpoints", json=body, headers=auth(api_key))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code
    assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://100.100.100.200/hook",
        "https://[::1]/hook",
        "https://[fd00:ec2::254]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
    ],
)
async def test_live_endpoints_must_be_https_on_public_addresses(
    http: httpx.AsyncClient, make_client: Any, url: str
) -> None:
    """A live client's endpoint on http, loopback, private, link-local or metadata addresses
    is refused with webhook_url_not_allowed."""
    _, live = await make_client("live", level="L1")
    r = await http.post("/v1/webhook-endpoints", json={"url": url}, headers=auth(live))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "webhook_url_not_allowed"


async def test_test_mode_may_use_loopback_but_not_private_addresses() -> None:
    """The dev relaxation covers loopback only, never the private network."""
    relaxed = urls.Policy(relaxed=True)
    assert (await urls.check("http://127.0.0.1:8000/h", relaxed)).addresses
    with pytest.raises(urls.UrlRefused) as refused:
        await urls.check("http://10.0.0.1/h", relaxed)
    assert refused.value.code == "webhook_url_not_allowed"


async def test_allowed_hosts_may_be_internal() -> None:
    """A host named in REALNAME_WEBHOOK_ALLOWED_HOSTS passes although it is internal."""
    strict = urls.Policy(relaxed=False, allowed_hosts=frozenset({"localhost"}))
    assert (await urls.check("https://localhost/h", strict)).addresses == ()
    with pytest.raises(urls.UrlRefused):
        await urls.check("https://127.0.0.1/h", strict)


async def test_addresses_are_checked_again_at_delivery(runtime: Runtime) -> None:
    """A URL that now points inside is refused at delivery time without connecting."""
    async with receiver() as r:
        outcome = await transport.post(
            runtime.webhook_client,
            r.url,
            b"{}",
            {},
            policy=urls.Policy(relaxed=False),
            deadline_seconds=2,
        )
    assert outcome.ok is False
    assert outcome.error == "webhook_url_not_allowed"
    assert r.received == []


async def test_an_endpoint_failing_for_five_days_is_disabled(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """After five days of failures the endpoint is disabled, audited, and its queue ends."""
    async with receiver(default="500") as r:
        endpoint = await register(http, api_key, r.url)
        async with session_scope(runtime.sessions) as session:
            await session.execute(
                update(WebhookEndpoint).values(failing_since=utcnow() - timedelta(days=5, hours=1))
            )
        await begin(http, api_key, worker)
    got = (await http.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=auth(api_key))).json()
    assert got["disabled"] is True
    async with session_scope(runtime.sessions) as session:
        delivery = (await session.execute(select(WebhookDelivery))).scalar_one()
        audited = (
            await session.execute(
                select(AuditEvent).where(AuditEvent.action == "webhook_endpoint.disabled")
            )
        ).scalar_one()
    assert delivery.status == "failed"
    assert delivery.last_error == "endpoint_disabled"
    assert audited.subject_id == endpoint["id"]


async def test_the_schedule_gives_up_after_its_last_retry(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """After the last scheduled retry fails, the delivery is failed and its job done."""
    async with receiver(default="500") as r:
        await register(http, api_key, r.url)
        await begin(http, api_key, worker)
        for _ in range(len(deliveries.RETRY_SCHEDULE)):
            await retry_now(runtime)
            await worker.run_once()
    assert len(r.received) == len(deliveries.RETRY_SCHEDULE) + 1
    async with session_scope(runtime.sessions) as session:
        delivery = (await session.execute(select(WebhookDelivery))).scalar_one()
        open_jobs = (
            await session.execute(select(OutboxJob).where(col(OutboxJob.done_at).is_(None)))
        ).all()
    assert delivery.status == "failed"
    assert open_jobs == []


def test_the_retry_schedule_spans_about_three_days() -> None:
    """Retries: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, 14 h, 20 h, 24 h, each within 10 %."""
    total = sum(deliveries.RETRY_SCHEDULE)
    assert 72 * 3600 <= total <= 90 * 3600
    for n, base in enumerate(deliveries.RETRY_SCHEDULE, start=1):
        delay = deliveries.next_delay(n)
        assert delay is not None
        assert base * 0.9 <= delay <= base * 1.1
    assert deliveries.next_delay(len(deliveries.RETRY_SCHEDULE) + 1) is None


async def test_the_sdk_reads_deliveries_as_the_events_api_lists_them(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """realname_sdk.webhooks.verify accepts real deliveries, and they are the events that
    GET /v1/events returns (deliveries may arrive in any order; the list is the order)."""
    async with receiver() as r:
        endpoint = await register(http, api_key, r.url)
        v = await start(http, api_key, worker)
        await http.post(f"/v1/verifications/{v['id']}/tokens", headers=auth(api_key))
        await http.delete(f"/v1/verifications/{v['id']}", headers=auth(api_key))
        await worker.run_until_idle()
    delivered = [
        sdk_webhooks.verify(got.body, got.headers, endpoint["secret"]) for got in r.received
    ]
    listed = (await http.get("/v1/events", headers=auth(api_key))).json()["data"]
    by_id = {e.id: e for e in delivered}
    assert len(delivered) == len(by_id) == len(listed)
    parsed = [sdk_webhooks.parse(e) for e in listed]
    assert [(e.type, e.created_at, e.data.jti) for e in parsed] == [
        (by_id[e.id].type, by_id[e.id].created_at, by_id[e.id].data.jti) for e in parsed
    ]
    # The first was delivered before the erasure with the user id; listed after it, [erased].
    assert by_id[parsed[0].id].data.external_user_id == GOOD["external_user_id"]
    assert {e.data.external_user_id for e in parsed} == {"[erased]"}


async def test_purge_removes_events_past_their_retention_with_their_deliveries(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """`realname purge` drops events older than 30 days, their deliveries and attempts, and
    keeps newer ones."""
    async with receiver() as r:
        await register(http, api_key, r.url)
        await begin(http, api_key, worker)
        async with session_scope(runtime.sessions) as session:
            await session.execute(update(Event).values(created_at=utcnow() - timedelta(days=31)))
        await begin(http, api_key, worker, **new_person())
    counts = await purge_now(runtime)
    assert (counts["events"], counts["webhook_deliveries"], counts["webhook_attempts"]) == (1, 1, 1)
    assert len(await events_listed(http, api_key)) == 1


async def purge_now(runtime: Runtime) -> dict[str, int]:
    async with session_scope(runtime.sessions) as session:
        return await purge.run(session, runtime.settings)


async def events_listed(http: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    return list((await http.get("/v1/events", headers=auth(key))).json()["data"])


async def test_a_delivery_tries_each_checked_address_until_one_connects(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name resolving to ::1 first (where nothing listens) and then 127.0.0.1 is delivered
    to 127.0.0.1."""

    async def resolver(host: str, port: int) -> list[urls.IPAddress]:
        return [ipaddress.ip_address("::1"), ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(urls, "_resolve", resolver)  # stands in for the DNS answer
    async with receiver() as r:
        outcome = await transport.post(
            runtime.webhook_client,
            r.url.replace("127.0.0.1", "receiver.test"),
            b"{}",
            {},
            policy=urls.Policy(relaxed=True),
            deadline_seconds=2,
        )
    assert outcome.ok, outcome
    assert r.received[0].headers["host"] == f"receiver.test:{r.port}"
