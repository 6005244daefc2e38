"""realname_sdk.webhooks: verify a delivery and read it as a typed event; the FastAPI helper;
FakeWebhookSender for integrators' tests."""

# No ``from __future__ import annotations``: FastAPI resolves the route's annotations at runtime.

import time
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from standardwebhooks import Webhook

from realname_sdk.fastapi import webhook_event
from realname_sdk.testing import FakeWebhookSender
from realname_sdk.webhooks import Event, InvalidWebhook, verify


@pytest.fixture
def sender() -> FakeWebhookSender:
    return FakeWebhookSender()


def test_a_signed_delivery_verifies_into_a_typed_event(sender: FakeWebhookSender) -> None:
    """verify() returns the event with its data typed."""
    d = sender.delivery(
        "verification.verified", verification_id="ver_1", external_user_id="u1", level="L2"
    )
    event = verify(d.body, d.headers, sender.secret)
    assert event.type == "verification.verified"
    assert event.id == d.headers["webhook-id"]
    assert event.data.verification_id == "ver_1"
    assert event.data.external_user_id == "u1"
    assert event.data.level == "L2"
    assert event.created_at.tzinfo is not None


def test_fake_deliveries_also_verify_with_the_reference_library(
    sender: FakeWebhookSender,
) -> None:
    """What FakeWebhookSender signs, standardwebhooks accepts unchanged."""
    d = sender.delivery("ping")
    assert Webhook(sender.secret).verify(d.body, d.headers)["type"] == "ping"


def test_a_changed_body_is_refused(sender: FakeWebhookSender) -> None:
    """One changed byte breaks the signature."""
    d = sender.delivery("ping")
    with pytest.raises(InvalidWebhook) as refused:
        verify(d.body.replace(b"ping", b"pong"), d.headers, sender.secret)
    assert refused.value.reason == "bad_signature"


def test_another_secret_is_refused(sender: FakeWebhookSender) -> None:
    """A delivery signed with another secret does not verify."""
    d = FakeWebhookSender().delivery("ping")
    with pytest.raises(InvalidWebhook) as refused:
        verify(d.body, d.headers, sender.secret)
    assert refused.value.reason == "bad_signature"


def test_any_of_several_secrets_may_match(sender: FakeWebhookSender) -> None:
    """While rotating, a receiver may accept either of two secrets."""
    d = sender.delivery("ping")
    assert verify(d.body, d.headers, [FakeWebhookSender().secret, sender.secret]).type == "ping"


@pytest.mark.parametrize(("age", "ok"), [(-299, True), (299, True), (301, False), (-301, False)])
def test_timestamps_are_held_to_five_minutes(sender: FakeWebhookSender, age: int, ok: bool) -> None:
    """A delivery signed more than 300 seconds away from the receiver's clock is refused."""
    now = int(time.time())
    d = sender.delivery("ping", timestamp=now - age)
    if ok:
        assert verify(d.body, d.headers, sender.secret, now=now).type == "ping"
    else:
        with pytest.raises(InvalidWebhook) as refused:
            verify(d.body, d.headers, sender.secret, now=now)
        assert refused.value.reason == "stale_timestamp"


def test_missing_headers_are_refused(sender: FakeWebhookSender) -> None:
    """Without the three webhook headers nothing is trusted."""
    d = sender.delivery("ping")
    headers = {k: v for k, v in d.headers.items() if k != "webhook-signature"}
    with pytest.raises(InvalidWebhook) as refused:
        verify(d.body, headers, sender.secret)
    assert refused.value.reason == "missing_headers"


def test_header_names_are_case_insensitive(sender: FakeWebhookSender) -> None:
    """Headers as a framework may spell them (Webhook-Id) are found."""
    d = sender.delivery("ping")
    headers = {k.title(): v for k, v in d.headers.items()}
    assert verify(d.body, headers, sender.secret).type == "ping"


async def test_the_fastapi_helper_accepts_genuine_and_refuses_forged_deliveries(
    sender: FakeWebhookSender,
) -> None:
    """webhook_event() gives the route a verified Event and answers 400 to anything else."""
    app = FastAPI()
    seen: list[Event] = []

    @app.post("/hooks/realname", status_code=204)
    async def hook(event: Annotated[Event, Depends(webhook_event(sender.secret))]) -> None:
        seen.append(event)

    good = sender.delivery("verification.rejected", reason="id_mismatch")
    forged = FakeWebhookSender().delivery("verification.verified")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://backend"
    ) as http:
        ok = await http.post("/hooks/realname", content=good.body, headers=good.headers)
        bad = await http.post("/hooks/realname", content=forged.body, headers=forged.headers)
    assert ok.status_code == 204
    assert bad.status_code == 400
    assert [e.data.reason for e in seen] == ["id_mismatch"]
