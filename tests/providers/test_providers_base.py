"""The provider base shared by the cloud verifiers and senders (``app.providers.base``): result
tables as data, the one retry policy, credentials from the environment, and the senders'
circuit breaker."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from app.providers import ProviderTransportError, RetryPolicy
from app.providers.base import CodeTable, CredentialEnv
from app.providers.breaker import BreakerState, CircuitBreaker
from app.senders.base import OutgoingSms
from app.senders.tencent_sms import TencentSmsSender

TABLE = CodeTable(
    "default",
    {"AuthFailure.Special": "exact"},
    families={"AuthFailure": "family"},
    prefixes=(("isv.ACCOUNT_", "prefix"),),
)
MESSAGE = OutgoingSms(
    message_id="msg_1",
    phone="+8613800138000",
    template="otp",
    params={"code": "123456", "ttl_minutes": "5"},
    body="123456",
)


async def no_sleep(_: float) -> None:
    return None


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("AuthFailure.Special", "exact"),
        ("AuthFailure", "family"),
        ("AuthFailure.SignatureExpire", "family"),
        ("AuthFailureX", "default"),
        ("isv.ACCOUNT_ABNORMAL", "prefix"),
        ("Unknown", "default"),
        (None, "default"),
    ],
)
def test_code_table_looks_up_exact_then_family_then_prefix(code: str | None, expected: str) -> None:
    """A code matches exactly first, then by its family (before the first dot), then by prefix."""
    assert TABLE(code) == expected


def test_extended_table_adds_exact_codes_that_win() -> None:
    """An extended table keeps the original's rows and lets its own exact codes win."""
    extended = TABLE.extended({"AuthFailure.SignatureExpire": "mine"})

    assert (extended("AuthFailure.SignatureExpire"), extended("AuthFailure")) == ("mine", "family")


async def test_retry_policy_retries_only_what_it_names() -> None:
    """``retry_on`` chooses the retried errors; anything else is raised at once."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        raise ProviderTransportError("unavailable")

    with pytest.raises(ProviderTransportError):
        await RetryPolicy(3, 0.0, no_sleep, retry_on=(KeyError,)).run(attempt)

    assert len(calls) == 1


def test_credential_env_names_every_missing_variable() -> None:
    """Missing credentials and settings are named together, and no value is."""
    names = CredentialEnv("X_ID", "X_SECRET", "X_TOKEN")

    with pytest.raises(ValueError, match="X_SECRET, X_OTHER") as raised:
        names.read({"X_ID": "id-value"}, ["X_OTHER"])

    assert "id-value" not in str(raised.value)


def sender(handler: Callable[[httpx.Request], httpx.Response]) -> TencentSmsSender:
    return TencentSmsSender(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        secret_id="AKIDtest",
        secret_key="test-secret",
        sdk_app_id="1400006666",
        sign_name="sign",
        template_id="1110",
        breaker=CircuitBreaker(failure_threshold=2),
    )


async def test_sender_breaker_opens_on_provider_failures() -> None:
    """After consecutive provider failures the sender answers a retriable circuit_open without
    a request."""
    requests: list[httpx.Request] = []

    def down(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(503)

    adapter = sender(down)

    results = [await adapter.send(MESSAGE) for _ in range(3)]

    assert [(r.reason, r.retriable) for r in results] == [
        ("provider_unavailable", True),
        ("provider_unavailable", True),
        ("circuit_open", True),
    ]
    assert len(requests) == 2
    assert adapter.breaker.state is BreakerState.OPEN


async def test_sender_breaker_ignores_refusals() -> None:
    """A refusal (a per-number limit) comes from a working provider: the breaker stays closed."""

    def refuses(_: httpx.Request) -> httpx.Response:
        status = {"Code": "LimitExceeded.PhoneNumberDailyLimit", "SerialNo": "", "Message": ""}
        return httpx.Response(200, json={"Response": {"SendStatusSet": [status]}})

    adapter = sender(refuses)

    results = [await adapter.send(MESSAGE) for _ in range(3)]

    assert {r.reason for r in results} == {"provider_rate_limited"}
    assert adapter.breaker.state is BreakerState.CLOSED
