"""realname_sdk clients against httpx.MockTransport: request building, retries, error parsing."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from realname_sdk import (
    AsyncRealnameClient,
    NotVerified,
    RateLimited,
    RealnameClient,
    RealnameError,
    Token,
    UnexpectedResponse,
    WaitTimeout,
)
from realname_sdk import _protocol as proto

BASE = "https://realname.test"
KEY = "rn_test_secretkey"
PERSON = {
    "external_user_id": "user-1",
    "real_name": "张三",
    "id_number": "11010519491231002X",
    "phone": "13800138000",
}
PERSONAL_VALUES = [PERSON["real_name"], PERSON["id_number"], PERSON["phone"]]


def verification(status: str = "pending", **extra: Any) -> dict[str, Any]:
    return {
        "id": "ver_1",
        "external_user_id": "user-1",
        "status": status,
        "status_reason": None,
        "level": "L2",
        "checks": [{"type": "id_registry", "status": "pending", "reason": None}],
        "masked": {"real_name": "张*", "id_number": "110105********002X", "phone": "138****8000"},
        "next_action": None,
        "policy_version": "2026-01",
        "created_at": "2026-01-05T08:00:00Z",
        "updated_at": "2026-01-05T08:00:00Z",
        **extra,
    }


def problem(status: int, code: str, **extra: Any) -> httpx.Response:
    body = {
        "type": f"/problems/{code}",
        "title": "T",
        "status": status,
        "detail": "D",
        "code": code,
    }
    headers = extra.pop("headers", {})
    return httpx.Response(
        status,
        json={**body, **extra},
        headers={"Content-Type": "application/problem+json", **headers},
    )


class Recorder:
    """A MockTransport handler answering from a script and keeping every request."""

    def __init__(
        self, *answers: httpx.Response | Callable[[httpx.Request], httpx.Response]
    ) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request) if callable(answer) else answer

    def client(self, **kwargs: Any) -> RealnameClient:
        http = httpx.Client(transport=httpx.MockTransport(self))
        return RealnameClient(BASE, KEY, http_client=http, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncRealnameClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self))
        return AsyncRealnameClient(BASE, KEY, http_client=http, **kwargs)


def created() -> httpx.Response:
    return httpx.Response(201, json=verification())


def test_create_verification_sends_the_documented_body() -> None:
    """create_verification posts the identity fields and the consent in the JSON body."""
    rec = Recorder(created())

    rec.client().create_verification(**PERSON, level="L2")

    assert json.loads(rec.requests[0].content) == {
        **PERSON,
        "consent": {"policy_version": "2026-01"},
        "level": "L2",
    }


def test_create_verification_sends_the_api_key_as_bearer() -> None:
    """Every request carries the API key as a bearer credential."""
    rec = Recorder(created())

    rec.client().create_verification(**PERSON)

    assert rec.requests[0].headers["Authorization"] == f"Bearer {KEY}"


def test_idempotency_key_is_a_generated_uuid4() -> None:
    """Without an idempotency_key the client sends a fresh uuid4 Idempotency-Key."""
    rec = Recorder(created())

    rec.client().create_verification(**PERSON)

    assert uuid.UUID(rec.requests[0].headers["Idempotency-Key"]).version == 4


def test_idempotency_key_is_reused_by_the_retries_of_one_call() -> None:
    """A call retried after a 503 sends the same Idempotency-Key again."""
    rec = Recorder(problem(503, "service_unavailable", headers={"Retry-After": "0"}), created())

    result = rec.client().create_verification(**PERSON)

    keys = [r.headers["Idempotency-Key"] for r in rec.requests]
    assert result.id == "ver_1"
    assert len(keys) == 2
    assert keys[0] == keys[1]


def test_separate_calls_get_separate_idempotency_keys() -> None:
    """Two create_verification calls do not share an Idempotency-Key."""
    rec = Recorder(created())
    client = rec.client()

    client.create_verification(**PERSON)
    client.create_verification(**PERSON)

    assert rec.requests[0].headers["Idempotency-Key"] != rec.requests[1].headers["Idempotency-Key"]


def test_explicit_idempotency_key_is_sent_verbatim() -> None:
    """A caller-chosen Idempotency-Key is sent unchanged."""
    rec = Recorder(created())

    rec.client().create_verification(**PERSON, idempotency_key="signup-42")

    assert rec.requests[0].headers["Idempotency-Key"] == "signup-42"


def test_connection_refused_is_retried_for_create() -> None:
    """A create that never reached the service is sent again, with the same key."""
    attempts: list[httpx.Request] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        if len(attempts) == 1:
            raise httpx.ConnectError("refused", request=request)
        return created()

    rec = Recorder(flaky)
    rec.client().create_verification(**PERSON)

    assert attempts[0].headers["Idempotency-Key"] == attempts[1].headers["Idempotency-Key"]


def test_submit_code_is_not_retried_after_a_gateway_error() -> None:
    """A code submission is sent once: every submission counts as an attempt."""
    rec = Recorder(problem(503, "service_unavailable", headers={"Retry-After": "0"}))

    with pytest.raises(RealnameError):
        rec.client().submit_code("ver_1", "123456")

    assert len(rec.requests) == 1


def test_retries_stop_after_max_retries() -> None:
    """A service that keeps failing is asked 1 + max_retries times, then the error is raised."""
    rec = Recorder(problem(503, "service_unavailable", headers={"Retry-After": "0"}))

    with pytest.raises(RealnameError) as caught:
        rec.client(max_retries=2).get_verification("ver_1")

    assert caught.value.status == 503
    assert len(rec.requests) == 3


def test_no_personal_value_appears_in_any_url() -> None:
    """No method puts a name, ID number or phone number into a URL."""
    token = {"access_token": "t", "token_type": "Bearer", "expires_in": 900}
    answers = {
        "/v1/verifications/ver_1/tokens": httpx.Response(201, json=token),
        "/v1/tokens/introspect": httpx.Response(200, json={"active": False}),
        "/v1/tokens/revoke": httpx.Response(200, json={}),
        "/v1/sandbox/messages": httpx.Response(200, json={"data": []}),
        "/v1/verifications/ver_1/sms-code/resend": httpx.Response(202, json=verification()),
    }
    rec = Recorder(lambda r: answers.get(r.url.path, httpx.Response(200, json=verification())))
    client = rec.client()

    client.create_verification(**PERSON)
    client.get_verification("ver_1")
    client.submit_code("ver_1", "123456")
    client.resend_code("ver_1")
    client.issue_token("ver_1")
    client.introspect("token")
    client.revoke("token")
    client.erase("ver_1")
    client.sandbox_messages("ver_1")

    urls = [str(r.url) for r in rec.requests]
    assert len(urls) == 9
    assert not [u for u in urls for value in PERSONAL_VALUES if value in u]


def test_no_personal_value_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Debug logs of the SDK and httpx carry no personal value."""
    rec = Recorder(problem(503, "service_unavailable", headers={"Retry-After": "0"}), created())
    caplog.set_level(logging.DEBUG)

    rec.client().create_verification(**PERSON)

    assert "realname POST /v1/verifications" in caplog.text
    assert not [value for value in PERSONAL_VALUES if value in caplog.text]


def test_request_repr_hides_personal_values() -> None:
    """The repr of a prepared create request shows no personal value."""
    request = proto.create_verification(
        **PERSON, policy_version="2026-01", level=None, idempotency_key=None
    )

    assert not [value for value in PERSONAL_VALUES if value in repr(request)]


def test_client_repr_hides_the_api_key() -> None:
    """The repr of a client does not show its API key."""
    with RealnameClient(BASE, KEY) as client:
        assert KEY not in repr(client)


def test_token_repr_hides_the_access_token() -> None:
    """A Token's repr leaves out the bearer credential."""
    token = Token.from_json({"access_token": "eyJsecret", "token_type": "Bearer", "expires_in": 9})

    assert "eyJsecret" not in repr(token)


def test_verification_id_is_escaped_in_the_path() -> None:
    """A verification id cannot step out of its path segment."""
    rec = Recorder(httpx.Response(200, json=verification()))

    rec.client().get_verification("../../admin")

    assert rec.requests[0].url.raw_path == b"/v1/verifications/..%2F..%2Fadmin"


def test_rate_limited_carries_retry_after_from_the_header() -> None:
    """A 429 raises RateLimited whose retry_after comes from the Retry-After header."""
    rec = Recorder(problem(429, "rate_limited", retry_after=60, headers={"Retry-After": "42"}))

    with pytest.raises(RateLimited) as caught:
        rec.client().resend_code("ver_1")

    assert caught.value.retry_after == 42
    assert caught.value.code == "rate_limited"


def test_rate_limited_falls_back_to_the_body_retry_after() -> None:
    """Without a Retry-After header, retry_after comes from the problem body."""
    rec = Recorder(problem(429, "rate_limited", retry_after=7))

    with pytest.raises(RateLimited) as caught:
        rec.client().resend_code("ver_1")

    assert caught.value.retry_after == 7


def test_not_verified_carries_missing_checks() -> None:
    """A 409 verification_not_verified raises NotVerified with the missing checks."""
    rec = Recorder(problem(409, "verification_not_verified", missing_checks=["sms_otp"]))

    with pytest.raises(NotVerified) as caught:
        rec.client().issue_token("ver_1")

    assert caught.value.missing_checks == ("sms_otp",)


def test_problem_fields_are_exposed_on_the_error() -> None:
    """status, code, title, detail and the whole body of a problem reach the exception."""
    rec = Recorder(problem(422, "code_incorrect", attempts_remaining=3))

    with pytest.raises(RealnameError) as caught:
        rec.client().submit_code("ver_1", "000000")

    err = caught.value
    assert (err.status, err.code, err.title, err.detail) == (422, "code_incorrect", "T", "D")
    assert err.body["attempts_remaining"] == 3


def test_field_errors_are_exposed() -> None:
    """Per-field validation errors of a 422 are available as field_errors."""
    errors = [{"pointer": "/phone", "code": "invalid_phone", "detail": "bad"}]
    rec = Recorder(problem(422, "invalid_phone", errors=errors))

    with pytest.raises(RealnameError) as caught:
        rec.client().create_verification(**PERSON)

    assert caught.value.field_errors == tuple(errors)


def test_an_error_that_is_not_a_problem_raises_unexpected_response() -> None:
    """An HTML error page (e.g. from a proxy) raises UnexpectedResponse with its status."""
    rec = Recorder(httpx.Response(502, text="<html>Bad gateway</html>"))

    with pytest.raises(UnexpectedResponse) as caught:
        rec.client(max_retries=0).get_verification("ver_1")

    assert (caught.value.status, caught.value.code) == (502, "unexpected_response")


def test_a_success_missing_a_required_member_raises_unexpected_response() -> None:
    """A 200 verification without an id raises UnexpectedResponse, not KeyError."""
    rec = Recorder(httpx.Response(200, json={"status": "pending"}))

    with pytest.raises(UnexpectedResponse):
        rec.client().get_verification("ver_1")


def test_unknown_fields_are_ignored_and_kept_in_raw() -> None:
    """Fields the SDK does not know do not break parsing and stay reachable in raw."""
    checks = [{"type": "x", "status": "passed", "weight": 1}]
    rec = Recorder(httpx.Response(200, json=verification(risk_score=3, checks=checks)))

    result = rec.client().get_verification("ver_1")

    assert result.raw["risk_score"] == 3
    assert result.checks[0].status == "passed"


def test_erase_parses_the_erasure_receipt() -> None:
    """erase returns the verification with its erasure receipt."""
    receipt = {
        "receipt_id": "era_1",
        "erased_at": "2026-01-05T09:00:00Z",
        "audit_event_seq": 12,
        "audit_event_hash": "ab" * 32,
    }
    rec = Recorder(httpx.Response(200, json=verification("erased", erasure=receipt)))

    result = rec.client().erase("ver_1")

    assert result.status == "erased"
    assert result.erasure is not None
    assert (result.erasure.receipt_id, result.erasure.audit_event_seq) == ("era_1", 12)


def test_introspection_maps_the_service_claims() -> None:
    """An active introspection exposes vid and lvl as verification_id and level."""
    body = {"active": True, "sub": "s", "vid": "ver_1", "lvl": "L2", "adult": True, "exp": 9}
    rec = Recorder(httpx.Response(200, json=body))

    result = rec.client().introspect("token")

    assert (result.active, result.verification_id, result.level, result.adult) == (
        True,
        "ver_1",
        "L2",
        True,
    )


def test_token_is_sent_in_the_body_of_introspect() -> None:
    """introspect posts the token as JSON, not in the URL."""
    rec = Recorder(httpx.Response(200, json={"active": False}))

    rec.client().introspect("tok.en.value")

    assert json.loads(rec.requests[0].content) == {"token": "tok.en.value"}


def test_sandbox_message_code_is_extracted() -> None:
    """The six-digit code is read out of the newest sandbox message."""
    message = {
        "id": "sms_1",
        "verification_id": "ver_1",
        "to": "138****8000",
        "body": "【实名核验】您的验证码是 654321, 5 分钟内有效。请勿告诉他人。",
        "created_at": "2026-01-05T08:00:00Z",
        "expires_at": "2026-01-05T08:05:00Z",
    }
    rec = Recorder(httpx.Response(200, json={"data": [message]}))

    assert rec.client().wait_for_sandbox_code("ver_1") == "654321"


def test_wait_for_status_polls_until_the_status_changes() -> None:
    """wait_for_status returns the first verification that left pending."""
    rec = Recorder(
        httpx.Response(200, json=verification("pending")),
        httpx.Response(200, json=verification("awaiting_code")),
    )

    result = rec.client().wait_for_status("ver_1", interval=0.01)

    assert result.status == "awaiting_code"
    assert len(rec.requests) == 2


def test_wait_for_status_gives_up_with_wait_timeout() -> None:
    """wait_for_status raises WaitTimeout carrying the last status seen."""
    rec = Recorder(httpx.Response(200, json=verification("pending")))

    with pytest.raises(WaitTimeout) as caught:
        rec.client().wait_for_status("ver_1", timeout=0.05, interval=0.01)

    assert caught.value.last_status == "pending"


def test_closing_the_client_leaves_a_passed_in_http_client_open() -> None:
    """The caller keeps ownership of the http_client it passed in."""
    http = httpx.Client(transport=httpx.MockTransport(Recorder(created())))

    RealnameClient(BASE, KEY, http_client=http).close()

    assert not http.is_closed
    http.close()


async def test_async_client_reuses_the_idempotency_key_on_retry() -> None:
    """The async client retries with the same Idempotency-Key too."""
    rec = Recorder(problem(503, "service_unavailable", headers={"Retry-After": "0"}), created())

    async with rec.async_client() as client:
        await client.create_verification(**PERSON)

    assert rec.requests[0].headers["Idempotency-Key"] == rec.requests[1].headers["Idempotency-Key"]


async def test_async_client_raises_not_verified() -> None:
    """The async client maps errors exactly like the sync one."""
    rec = Recorder(problem(409, "verification_not_verified", missing_checks=["id_registry"]))

    async with rec.async_client() as client:
        with pytest.raises(NotVerified) as caught:
            await client.issue_token("ver_1")

    assert caught.value.missing_checks == ("id_registry",)


async def test_async_client_builds_the_same_request_as_the_sync_one() -> None:
    """Both clients send identical method, URL, body and headers for the same call."""
    sync_rec, async_rec = Recorder(created()), Recorder(created())

    sync_rec.client().create_verification(**PERSON, idempotency_key="k")
    async with async_rec.async_client() as client:
        await client.create_verification(**PERSON, idempotency_key="k")

    def shape(r: httpx.Request) -> tuple[str, str, bytes, dict[str, str]]:
        return r.method, str(r.url), r.content, dict(r.headers)

    assert shape(sync_rec.requests[0]) == shape(async_rec.requests[0])
