"""SMS sends that may or may not have arrived, and the per-person send limit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.runtime import Runtime
from app.senders.aliyun_sms import AliyunSmsSender
from app.verifiers.mock_registry import MockIdRegistryVerifier
from app.worker import Worker
from tests.conftest import auth
from tests.test_intake import GOOD


@pytest.fixture
async def timing_out_provider(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Live clients get a passing registry and an Alibaba Cloud SMS sender whose provider reads
    the request and then never answers (a read timeout); returns the list of requests seen."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ReadTimeout("no answer", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    sender = AliyunSmsSender(
        client,
        access_key_id="LTAItest",
        access_key_secret="secret-for-tests",
        sign_name="签名",
        template_code="SMS_1",
    )
    monkeypatch.setitem(runtime.verifiers.live, "id_registry", [MockIdRegistryVerifier(None)])
    monkeypatch.setattr(runtime.senders, "live", sender)
    yield seen
    await client.aclose()


async def test_timed_out_send_is_delivery_unknown_and_not_resent(
    http: httpx.AsyncClient, make_client: Any, worker: Worker, timing_out_provider: Any
) -> None:
    """A SendSms that timed out after reaching the provider is asked once, never retried, and the
    code check reports delivery_unknown while the verification still awaits a code."""
    _, live = await make_client("live", level="L2")
    created = await http.post("/v1/verifications", json=GOOD, headers=auth(live))
    assert created.status_code == 201, created.text

    await worker.run_until_idle(max_wait=3)

    got = (await http.get(f"/v1/verifications/{created.json()['id']}", headers=auth(live))).json()
    assert len(timing_out_provider) == 1
    assert got["status"] == "awaiting_code"
    sms_check = next(c for c in got["checks"] if c["type"] == "sms_otp")
    assert sms_check["reason"] == "delivery_unknown"


async def test_sms_sends_are_limited_per_person_across_phones(runtime: Runtime) -> None:
    """One person's sends count together whatever phone they go to: past the per-person limit
    a fresh phone is refused too."""
    limit = runtime.limits.sms_per_identity[0].amount
    for n in range(limit):
        phone = runtime.blind.compute("phone", f"+86138001380{n:02d}")
        assert await runtime.limits.hit_sms("live", "cli_a", phone, "idn_person") is None

    fresh = runtime.blind.compute("phone", "+8613900139000")
    assert await runtime.limits.hit_sms("live", "cli_a", fresh, "idn_person") is not None
    assert await runtime.limits.hit_sms("live", "cli_a", fresh, "idn_other") is None
