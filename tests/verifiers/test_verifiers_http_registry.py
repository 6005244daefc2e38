"""HTTP registry adapters under simulated faults (httpx.MockTransport)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from app.providers.breaker import BreakerState, CircuitBreaker
from app.verifiers.base import CheckResult, Subject, run_check
from app.verifiers.http_registry import HttpCarrierVerifier, HttpIdRegistryVerifier

BASE_URL = "https://registry.test/api/"
SUBJECT = Subject("王小明", "440305199003071236", "+8613912345678")
REQUEST_ID = "0b5e8a3c-1f4d-4e2a-9c6b-7d8e9f0a1b2c"


def answer(result: str, status: int = 200, request_id: str | None = REQUEST_ID) -> httpx.Response:
    return httpx.Response(status, json={"result": result, "request_id": request_id})


@dataclass
class Script:
    """A transport handler that plays back steps (responses or exceptions), recording requests.

    The last step repeats once the others are used up.
    """

    steps: list[httpx.Response | Exception]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


@dataclass
class FakeSleep:
    """Records back-off delays instead of sleeping."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@dataclass
class FakeClock:
    """A monotonic clock the test moves by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


Connect = Callable[[Script], httpx.AsyncClient]


@pytest.fixture
def sleep() -> FakeSleep:
    """The fake sleep handed to the verifier under test."""
    return FakeSleep()


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Builds AsyncClients over a Script and closes them after the test."""
    clients: list[httpx.AsyncClient] = []

    def build(script: Script) -> httpx.AsyncClient:
        clients.append(httpx.AsyncClient(transport=httpx.MockTransport(script)))
        return clients[-1]

    yield build
    for client in clients:
        await client.aclose()


async def test_retries_503_then_succeeds(connect: Connect, sleep: FakeSleep) -> None:
    """Two 503s then an answer: three calls, two back-off sleeps, and the answer is returned."""
    script = Script([answer("unavailable", 503), answer("unavailable", 503), answer("match")])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, sleep=sleep)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.passed(billable=True, provider_reference=REQUEST_ID)
    assert len(script.requests) == 3
    assert len(sleep.delays) == 2


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gives_up_after_max_attempts(connect: Connect, sleep: FakeSleep, status: int) -> None:
    """A registry that keeps failing is called max_attempts times, then registry_unavailable."""
    script = Script([httpx.Response(status)])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, max_attempts=4, sleep=sleep)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("registry_unavailable")
    assert len(script.requests) == 4
    assert len(sleep.delays) == 3


async def test_maintenance_reported_when_retries_run_out(
    connect: Connect, sleep: FakeSleep
) -> None:
    """A registry that stays in maintenance gives registry_maintenance after the retries."""
    script = Script([answer("maintenance", 503)])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, sleep=sleep)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("registry_maintenance")
    assert len(script.requests) == 3


async def test_quota_exceeded_is_not_retried(connect: Connect, sleep: FakeSleep) -> None:
    """A 429 is answered at once with registry_quota_exceeded, after a single call."""
    script = Script([answer("quota_exceeded", 429)])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, sleep=sleep)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("registry_quota_exceeded")
    assert len(script.requests) == 1
    assert sleep.delays == []


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ConnectError("connection refused"),
        httpx.ReadError("connection reset"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_transport_error_is_retried(
    connect: Connect, sleep: FakeSleep, error: Exception
) -> None:
    """Timeouts and network errors are retried; a later answer is returned."""
    script = Script([error, answer("mismatch")])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, sleep=sleep)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.failed("id_mismatch", billable=True, provider_reference=REQUEST_ID)
    assert len(script.requests) == 2


async def test_persistent_timeouts_give_registry_unavailable(
    connect: Connect, sleep: FakeSleep
) -> None:
    """Timing out on every attempt ends in registry_unavailable, never an exception."""
    script = Script([httpx.ReadTimeout("read timed out")])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, sleep=sleep)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("registry_unavailable")
    assert len(script.requests) == 3


async def test_backoff_grows_exponentially_with_jitter(connect: Connect, sleep: FakeSleep) -> None:
    """Delay n lies in [b*2^(n-1)/2, b*2^(n-1)]."""
    script = Script([httpx.Response(503)])
    verifier = HttpIdRegistryVerifier(
        connect(script), BASE_URL, max_attempts=5, backoff_base=0.2, sleep=sleep
    )

    await verifier.check(SUBJECT, attempt_key="a-1")

    for n, delay in enumerate(sleep.delays, start=1):
        ceiling = 0.2 * 2 ** (n - 1)
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 201, 302])
async def test_unexpected_status_is_bad_response_without_retry(
    connect: Connect, sleep: FakeSleep, status: int
) -> None:
    """Statuses outside the protocol give registry_bad_response after a single call."""
    script = Script([answer("match", status)])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, sleep=sleep)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("registry_bad_response")
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b"",
        b"\xff\xfe not utf-8",
        b'["match"]',
        b'{"request_id": "0b5e8a3c-1f4d-4e2a-9c6b-7d8e9f0a1b2c"}',
        b'{"result": "MATCH"}',
        b'{"result": "passed"}',
        b'{"result": true}',
        b'{"result": "unavailable"}',
        b'{"result": "phone_mismatch"}',
        b'{"result": "match", "request_id": "\\u5f20\\u4e09 11010519491231002X"}',
        b'{"result": "match", "request_id": 42}',
        b'{"result": "match", "padding": "' + b"x" * 20_000 + b'"}',
    ],
)
async def test_garbage_body_is_bad_response(
    connect: Connect, sleep: FakeSleep, body: bytes
) -> None:
    """A 200 whose body is not exactly a valid id-check answer gives registry_bad_response."""
    script = Script([httpx.Response(200, content=body)])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, sleep=sleep)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("registry_bad_response")


async def test_answer_without_request_id_is_accepted(connect: Connect, sleep: FakeSleep) -> None:
    """A valid answer without a request_id passes with no provider reference."""
    script = Script([httpx.Response(200, json={"result": "match"})])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, sleep=sleep)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.passed(billable=True)


async def test_carrier_accepts_phone_mismatch(connect: Connect, sleep: FakeSleep) -> None:
    """The carrier check maps phone_mismatch to failed/phone_mismatch, billed."""
    script = Script([answer("phone_mismatch")])
    verifier = HttpCarrierVerifier(connect(script), BASE_URL, sleep=sleep)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.failed(
        "phone_mismatch", billable=True, provider_reference=REQUEST_ID
    )


@pytest.mark.parametrize(
    ("cls", "path", "fields"),
    [
        (HttpIdRegistryVerifier, "/api/v1/id-check", {"real_name", "id_number"}),
        (HttpCarrierVerifier, "/api/v1/carrier-check", {"real_name", "id_number", "phone"}),
    ],
)
async def test_personal_data_only_in_json_body(
    connect: Connect,
    sleep: FakeSleep,
    cls: type[HttpIdRegistryVerifier],
    path: str,
    fields: set[str],
) -> None:
    """The URL and headers carry no subject field; the JSON body carries exactly the needed ones."""
    script = Script([answer("match")])
    verifier = cls(connect(script), BASE_URL, api_token="s3cret", sleep=sleep)

    await verifier.check(SUBJECT, attempt_key="attempt-42")

    (request,) = script.requests
    assert request.method == "POST"
    assert request.url.path == path
    outside_body = str(request.url) + repr(request.headers.multi_items())
    for value in (SUBJECT.real_name, SUBJECT.id_number, SUBJECT.phone, SUBJECT.phone[3:]):
        assert value not in outside_body
    body = json.loads(request.content)
    assert set(body) == fields
    assert body["id_number"] == SUBJECT.id_number


async def test_idempotency_key_is_the_attempt_key_on_every_attempt(
    connect: Connect, sleep: FakeSleep
) -> None:
    """Each attempt, retries included, sends Idempotency-Key equal to the attempt_key."""
    script = Script([httpx.Response(503), answer("match")])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, sleep=sleep)

    await verifier.check(SUBJECT, attempt_key="attempt-42")

    assert [r.headers["Idempotency-Key"] for r in script.requests] == ["attempt-42"] * 2


@pytest.mark.parametrize(("token", "expected"), [("s3cret", "Bearer s3cret"), (None, None)])
async def test_bearer_token_sent_only_when_configured(
    connect: Connect, sleep: FakeSleep, token: str | None, expected: str | None
) -> None:
    """The Authorization header is the configured bearer token, absent without one."""
    script = Script([answer("match")])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, api_token=token, sleep=sleep)

    await verifier.check(SUBJECT, attempt_key="a-1")

    assert script.requests[0].headers.get("Authorization") == expected


async def test_default_timeouts_are_set_per_request(connect: Connect, sleep: FakeSleep) -> None:
    """Each request carries connect 2 s and read 5 s timeouts."""
    script = Script([answer("match")])
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, sleep=sleep)

    await verifier.check(SUBJECT, attempt_key="a-1")

    timeout = script.requests[0].extensions["timeout"]
    assert (timeout["connect"], timeout["read"]) == (2.0, 5.0)


async def test_breaker_opens_then_short_circuits(connect: Connect, sleep: FakeSleep) -> None:
    """After N failed checks the breaker opens and checks return circuit_open without a call."""
    script = Script([httpx.ConnectError("refused")])
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=30.0, clock=FakeClock())
    verifier = HttpIdRegistryVerifier(
        connect(script), BASE_URL, max_attempts=2, breaker=breaker, sleep=sleep
    )
    for _ in range(2):
        assert await verifier.check(SUBJECT, attempt_key="a-1") == CheckResult.unavailable(
            "registry_unavailable"
        )
    calls_before = len(script.requests)

    result = await verifier.check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("circuit_open")
    assert breaker.state is BreakerState.OPEN
    assert calls_before == 4
    assert len(script.requests) == calls_before


async def test_breaker_half_opens_after_cool_down(connect: Connect, sleep: FakeSleep) -> None:
    """Once the cool-down has passed, one trial call goes through and its success closes it."""
    script = Script([httpx.ConnectError("refused"), answer("match")])
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=30.0, clock=clock)
    verifier = HttpIdRegistryVerifier(
        connect(script), BASE_URL, max_attempts=1, breaker=breaker, sleep=sleep
    )
    await verifier.check(SUBJECT, attempt_key="a-1")
    clock.now += 29.9
    assert await verifier.check(SUBJECT, attempt_key="a-2") == CheckResult.unavailable(
        "circuit_open"
    )
    clock.now += 0.1

    result = await verifier.check(SUBJECT, attempt_key="a-3")

    assert result.outcome == "passed"
    assert len(script.requests) == 2
    assert breaker.state is BreakerState.CLOSED


async def test_bad_responses_count_against_the_breaker(connect: Connect, sleep: FakeSleep) -> None:
    """A registry that answers garbage opens the breaker like one that is down."""
    script = Script([httpx.Response(200, content=b"garbage")])
    breaker = CircuitBreaker(failure_threshold=2, clock=FakeClock())
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, breaker=breaker, sleep=sleep)

    for _ in range(2):
        await verifier.check(SUBJECT, attempt_key="a-1")

    assert breaker.state is BreakerState.OPEN


async def test_quota_answer_keeps_the_breaker_closed(connect: Connect, sleep: FakeSleep) -> None:
    """A 429 comes from a working registry, so it does not count as a breaker failure."""
    script = Script([answer("quota_exceeded", 429)])
    breaker = CircuitBreaker(failure_threshold=1, clock=FakeClock())
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, breaker=breaker, sleep=sleep)

    await verifier.check(SUBJECT, attempt_key="a-1")

    assert breaker.state is BreakerState.CLOSED


async def test_unexpected_exception_fails_closed_and_counts(
    connect: Connect, sleep: FakeSleep
) -> None:
    """A non-retriable error propagates to run_check (verifier_error) and trips the breaker."""
    script = Script([httpx.UnsupportedProtocol("no such scheme")])
    breaker = CircuitBreaker(failure_threshold=1, clock=FakeClock())
    verifier = HttpIdRegistryVerifier(connect(script), BASE_URL, breaker=breaker, sleep=sleep)

    result = await run_check(verifier, SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("verifier_error")
    assert len(script.requests) == 1
    assert breaker.state is BreakerState.OPEN


async def test_logs_hold_no_personal_data(
    connect: Connect, sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    """Retries, garbage and errors are logged without any subject field."""
    caplog.set_level(logging.DEBUG)
    script = Script(
        [
            httpx.ReadTimeout("read timed out"),
            httpx.Response(503, json={"result": "unavailable"}),
            httpx.Response(200, json={"result": "match", "request_id": SUBJECT.real_name}),
        ]
    )
    verifier = HttpCarrierVerifier(connect(script), BASE_URL, sleep=sleep)

    await run_check(verifier, SUBJECT, attempt_key="a-1")

    assert caplog.records
    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    for value in (SUBJECT.real_name, SUBJECT.id_number, SUBJECT.phone, SUBJECT.phone[3:]):
        assert value not in logged


@pytest.mark.parametrize(
    ("max_attempts", "backoff_base"), [(0, 0.2), (3, -0.1)], ids=["attempts", "backoff"]
)
async def test_rejects_invalid_settings(
    connect: Connect, max_attempts: int, backoff_base: float
) -> None:
    """Fewer than one attempt or a negative back-off is a configuration error."""
    client = connect(Script([answer("match")]))

    with pytest.raises(ValueError, match="must"):
        HttpIdRegistryVerifier(
            client, BASE_URL, max_attempts=max_attempts, backoff_base=backoff_base
        )
