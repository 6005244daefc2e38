"""The generic HTTP SMS gateway sender, against a gateway simulated with httpx.MockTransport."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from app.senders.base import OutgoingSms, Sender, SendResult
from app.senders.http_gateway import (
    DEFAULT_TOLERANCE_SECONDS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HttpGatewaySender,
    compute_signature,
    verify_signature,
)

URL = "https://sms-gateway.test/v1/messages"
SECRET = b"gateway-secret-0123456789abcdef!"
NOW = 1_767_225_600.75
PHONE = "+8613912345678"
NATIONAL = "13912345678"
CODE = "482913"
BODY = f"【实名认证】您的验证码是{CODE}，5分钟内有效。"
MESSAGE = OutgoingSms(
    message_id="msg-5b8c0d1e", phone=PHONE, template="otp", params={"code": CODE}, body=BODY
)

Handler = Callable[[httpx.Request], httpx.Response]
Connect = Callable[..., HttpGatewaySender]


def respond(status: int = 200, **kwargs: object) -> Handler:
    """A gateway that answers every request with ``httpx.Response(status, **kwargs)``."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, **kwargs)  # type: ignore[arg-type]

    return handler


def fail(error: Exception) -> Handler:
    """A gateway that cannot be reached: every request raises ``error``."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    return handler


def signed(body: bytes, timestamp: str = "1700000000", secret: bytes = SECRET) -> str:
    """A ``v1=`` header for ``body``, computed independently of the module under test."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Builds senders over a MockTransport handler and closes their clients after the test."""
    clients: list[httpx.AsyncClient] = []

    def build(handler: Handler, **kwargs: object) -> HttpGatewaySender:
        clients.append(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        kwargs.setdefault("clock", lambda: NOW)
        # Most tests here pin down the deprecated scheme, still sent behind the setting.
        kwargs.setdefault("legacy_signature", True)
        return HttpGatewaySender(clients[-1], URL, SECRET, **kwargs)  # type: ignore[arg-type]

    yield build
    for client in clients:
        await client.aclose()


# The request on the wire ------------------------------------------------------------------------


async def test_a_gateway_verifies_with_the_standardwebhooks_library() -> None:
    """With a whsec_ secret, the reference library verifies the request unchanged, and the
    webhook-id is the message id."""
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    seen: list[dict[str, Any]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(Webhook(secret).verify(request.content, dict(request.headers)))
        assert request.headers["webhook-id"] == MESSAGE.message_id
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(gateway)) as client:
        assert (await HttpGatewaySender(client, URL, secret).send(MESSAGE)).delivered
    assert seen[0]["message_id"] == MESSAGE.message_id


async def test_the_deprecated_headers_are_sent_only_behind_the_setting(connect: Connect) -> None:
    """Without legacy_signature only the Standard Webhooks headers are sent."""
    requests: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200)

    await connect(gateway, legacy_signature=False).send(MESSAGE)
    await connect(gateway, legacy_signature=True).send(MESSAGE)
    assert TIMESTAMP_HEADER not in requests[0].headers
    assert SIGNATURE_HEADER not in requests[0].headers
    assert requests[0].headers["webhook-signature"].startswith("v1,")
    assert requests[1].headers[SIGNATURE_HEADER].startswith("v1=")
    assert requests[1].headers["webhook-signature"] == requests[0].headers["webhook-signature"]


async def test_signature_verifies_over_raw_body_and_timestamp(connect: Connect) -> None:
    """The gateway can verify the signature header from the raw body and timestamp header."""

    def gateway(request: httpx.Request) -> httpx.Response:
        assert verify_signature(
            SECRET,
            request.headers[TIMESTAMP_HEADER],
            request.content,
            request.headers[SIGNATURE_HEADER],
            now=NOW,
        )
        return httpx.Response(200)

    assert (await connect(gateway).send(MESSAGE)).delivered


async def test_signature_header_is_one_v1_value(connect: Connect) -> None:
    """The signature header is exactly ``v1=`` and the independently computed HMAC."""

    def gateway(request: httpx.Request) -> httpx.Response:
        timestamp = request.headers[TIMESTAMP_HEADER]
        assert request.headers[SIGNATURE_HEADER] == signed(request.content, timestamp)
        return httpx.Response(200)

    assert (await connect(gateway).send(MESSAGE)).delivered


async def test_timestamp_header_is_whole_seconds_of_the_clock(connect: Connect) -> None:
    """The timestamp header is the injected clock's time truncated to an integer."""

    def gateway(request: httpx.Request) -> httpx.Response:
        assert request.headers[TIMESTAMP_HEADER] == str(int(NOW))
        return httpx.Response(200)

    assert (await connect(gateway).send(MESSAGE)).delivered


async def test_timestamp_header_with_real_clock_is_within_tolerance(connect: Connect) -> None:
    """With the default clock, the timestamp is a decimal integer within 300 s of now."""

    def gateway(request: httpx.Request) -> httpx.Response:
        timestamp = request.headers[TIMESTAMP_HEADER]
        assert timestamp.isascii()
        assert timestamp.isdigit()
        assert abs(int(timestamp) - time.time()) <= DEFAULT_TOLERANCE_SECONDS
        return httpx.Response(200)

    assert (await connect(gateway, clock=time.time).send(MESSAGE)).delivered


async def test_idempotency_key_is_the_message_id(connect: Connect) -> None:
    """Idempotency-Key carries the message_id, the same value as in the body."""

    def gateway(request: httpx.Request) -> httpx.Response:
        assert request.headers["Idempotency-Key"] == MESSAGE.message_id
        assert json.loads(request.content)["message_id"] == MESSAGE.message_id
        return httpx.Response(200)

    assert (await connect(gateway).send(MESSAGE)).delivered


async def test_url_is_unchanged_and_carries_no_personal_data(connect: Connect) -> None:
    """The request goes to the configured URL by POST, with no phone or code in it."""

    def gateway(request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert str(request.url) == URL
        for secret_value in (PHONE, NATIONAL, CODE):
            assert secret_value not in str(request.url)
        return httpx.Response(200)

    assert (await connect(gateway).send(MESSAGE)).delivered


async def test_content_type_is_json(connect: Connect) -> None:
    """The request declares Content-Type: application/json."""

    def gateway(request: httpx.Request) -> httpx.Response:
        assert request.headers["Content-Type"] == "application/json"
        return httpx.Response(200)

    assert (await connect(gateway).send(MESSAGE)).delivered


async def test_body_is_compact_utf8_json_with_the_message_fields(connect: Connect) -> None:
    """The body is compact UTF-8 JSON (no \\u escapes) with exactly the five message fields."""
    expected = {
        "message_id": MESSAGE.message_id,
        "to": PHONE,
        "template": "otp",
        "params": {"code": CODE},
        "body": BODY,
    }

    def gateway(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content.decode("utf-8")) == expected
        assert request.content == json.dumps(
            expected, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        return httpx.Response(200)

    assert (await connect(gateway).send(MESSAGE)).delivered


async def test_default_timeouts_are_applied(connect: Connect) -> None:
    """Requests carry the default timeouts: connect 2 s, read, write and pool 5 s."""

    def gateway(request: httpx.Request) -> httpx.Response:
        assert request.extensions["timeout"] == {
            "connect": 2.0,
            "read": 5.0,
            "write": 5.0,
            "pool": 5.0,
        }
        return httpx.Response(200)

    assert (await connect(gateway).send(MESSAGE)).delivered


async def test_each_send_is_signed_afresh_with_the_same_key(connect: Connect) -> None:
    """A retry carries a new timestamp and signature but the same Idempotency-Key."""
    clock = iter([NOW, NOW + 30])
    seen: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503)

    sender = connect(gateway, clock=lambda: next(clock))
    await sender.send(MESSAGE)
    await sender.send(MESSAGE)

    first, second = seen
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert int(second.headers[TIMESTAMP_HEADER]) == int(first.headers[TIMESTAMP_HEADER]) + 30
    assert first.headers[SIGNATURE_HEADER] != second.headers[SIGNATURE_HEADER]


async def test_one_request_per_send(connect: Connect) -> None:
    """The sender never retries by itself: a failing send makes exactly one request."""
    seen: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503)

    await connect(gateway).send(MESSAGE)

    assert len(seen) == 1


async def test_invalid_message_id_is_refused_before_any_request(connect: Connect) -> None:
    """A message_id that cannot be a header value raises ValueError and sends nothing."""
    seen: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    bad = OutgoingSms("msg 1\r\nX-Evil: 1", PHONE, "otp", {"code": CODE}, BODY)

    with pytest.raises(ValueError, match="message_id"):
        await connect(gateway).send(bad)
    assert seen == []


# Outcomes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, SendResult(delivered=True)),
        (202, SendResult(delivered=True)),
        (204, SendResult(delivered=True)),
        (400, SendResult(delivered=False, retriable=False, reason="gateway_rejected")),
        (401, SendResult(delivered=False, retriable=False, reason="gateway_rejected")),
        (422, SendResult(delivered=False, retriable=False, reason="gateway_rejected")),
        (429, SendResult(delivered=False, retriable=True, reason="gateway_throttled")),
        (500, SendResult(delivered=False, retriable=True, reason="gateway_unavailable")),
        (502, SendResult(delivered=False, retriable=True, reason="gateway_unavailable")),
        (503, SendResult(delivered=False, retriable=True, reason="gateway_unavailable")),
    ],
)
async def test_status_maps_to_result(connect: Connect, status: int, expected: SendResult) -> None:
    """Each gateway status maps to its documented SendResult."""
    assert await connect(respond(status)).send(MESSAGE) == expected


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirect_is_rejected(connect: Connect, status: int) -> None:
    """A redirect is not followed and counts as a permanent refusal."""
    sender = connect(respond(status, headers={"Location": "https://elsewhere.test/"}))

    result = await sender.send(MESSAGE)

    assert result == SendResult(delivered=False, retriable=False, reason="gateway_rejected")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ConnectTimeout("connect timed out"), "timeout"),
        (httpx.ReadTimeout("read timed out"), "timeout"),
        (httpx.WriteTimeout("write timed out"), "timeout"),
        (httpx.PoolTimeout("pool timed out"), "timeout"),
        (httpx.ConnectError("connection refused"), "gateway_unavailable"),
        (httpx.ReadError("connection reset"), "gateway_unavailable"),
        (httpx.RemoteProtocolError("server hung up"), "gateway_unavailable"),
    ],
)
async def test_transport_error_maps_to_retriable_result(
    connect: Connect, error: Exception, reason: str
) -> None:
    """Timeouts and connection failures are retriable, with a reason naming the kind."""
    result = await connect(fail(error)).send(MESSAGE)

    assert result == SendResult(delivered=False, retriable=True, reason=reason)


async def test_configuration_error_propagates(connect: Connect) -> None:
    """A transport error that signals misconfiguration is raised, not hidden as an outage."""
    with pytest.raises(httpx.UnsupportedProtocol):
        await connect(fail(httpx.UnsupportedProtocol("no such scheme"))).send(MESSAGE)


async def test_provider_reference_is_the_response_id(connect: Connect) -> None:
    """A short printable ``id`` in the 2xx JSON answer becomes the provider reference."""
    result = await connect(respond(202, json={"id": "gw-7f3a9c"})).send(MESSAGE)

    assert result == SendResult(delivered=True, provider_reference="gw-7f3a9c")


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"json": {"id": 12345}}, id="not-a-string"),
        pytest.param({"json": {"id": ""}}, id="empty"),
        pytest.param({"json": {"id": "r" * 129}}, id="too-long"),
        pytest.param({"json": {"id": "ref 1"}}, id="space"),
        pytest.param({"json": {"id": "ref\n1"}}, id="control-character"),
        pytest.param({"json": {"id": "回执1"}}, id="non-ascii"),
        pytest.param({"json": {"id": f"to-{NATIONAL}"}}, id="echoes-phone"),
        pytest.param({"json": {"id": f"code-{CODE}"}}, id="echoes-code"),
        pytest.param({"json": {"status": "queued"}}, id="missing"),
        pytest.param({"json": ["gw-1"]}, id="not-an-object"),
        pytest.param({"content": b"OK"}, id="not-json"),
        pytest.param({"content": b"\xff\xfe"}, id="not-utf8"),
        pytest.param({"json": {"id": "gw-1", "pad": "x" * 20_000}}, id="oversized"),
    ],
)
async def test_unsafe_or_missing_reference_is_dropped(
    connect: Connect, kwargs: dict[str, object]
) -> None:
    """A 2xx without a safe ``id`` is still delivered, with no provider reference."""
    result = await connect(respond(200, **kwargs)).send(MESSAGE)

    assert result == SendResult(delivered=True, provider_reference=None)


# Logging ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(respond(200, json={"id": "gw-1"}), id="200"),
        pytest.param(respond(400, json={"error": f"bad number {PHONE}"}), id="400"),
        pytest.param(respond(429), id="429"),
        pytest.param(respond(503), id="503"),
        pytest.param(fail(httpx.ConnectTimeout(f"timed out sending {BODY}")), id="timeout"),
        pytest.param(fail(httpx.ConnectError(f"refused for {PHONE}")), id="connect-error"),
    ],
)
async def test_logs_carry_no_personal_data(
    connect: Connect, caplog: pytest.LogCaptureFixture, handler: Handler
) -> None:
    """At DEBUG, no log record mentions the phone, the code or the body, whatever the outcome."""
    caplog.set_level(logging.DEBUG)

    await connect(handler).send(MESSAGE)

    assert caplog.records, "the send should be logged"
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record)) + caplog.text
        for secret_value in (PHONE, NATIONAL, CODE, BODY):
            assert secret_value not in text


async def test_log_record_holds_only_id_status_and_reason(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """The sender's log record carries message_id, status and reason, and no traceback."""
    caplog.set_level(logging.DEBUG, logger="app.senders.http_gateway")

    await connect(respond(503)).send(MESSAGE)

    (record,) = [r for r in caplog.records if r.name == "app.senders.http_gateway"]
    assert (record.message_id, record.status, record.reason) == (  # type: ignore[attr-defined]
        MESSAGE.message_id,
        503,
        "gateway_unavailable",
    )
    assert record.exc_info is None


# verify_signature and compute_signature ---------------------------------------------------------

TS = "1700000000"
RAW = b'{"message_id":"m1","to":"+8613912345678"}'


def test_compute_signature_matches_published_vector() -> None:
    """compute_signature reproduces a fixed vector gateway implementers can test against."""
    body = b'{"message_id":"m1"}'

    signature = compute_signature(b"whsec-test-secret", "1700000000", body)

    assert signature == "15643a8c57d3eda98b8b53a5a571251f3e2f3d12b13eb979809d2ae3b982aac1"


def test_verify_accepts_a_valid_signature() -> None:
    """A correct signature with a fresh timestamp verifies."""
    assert verify_signature(SECRET, TS, RAW, signed(RAW), now=int(TS) + 5)


def test_verify_rejects_tampered_body() -> None:
    """A body changed after signing fails verification."""
    tampered = RAW.replace(b"13912345678", b"13912345679")

    assert not verify_signature(SECRET, TS, tampered, signed(RAW), now=int(TS))


def test_verify_rejects_wrong_secret() -> None:
    """A signature made with another secret fails verification."""
    header = signed(RAW, secret=b"another-secret-another-secret-00")

    assert not verify_signature(SECRET, TS, RAW, header, now=int(TS))


def test_verify_rejects_signature_for_another_timestamp() -> None:
    """The timestamp is signed: moving it (even within tolerance) fails verification."""
    assert not verify_signature(SECRET, "1700000001", RAW, signed(RAW, TS), now=int(TS))


@pytest.mark.parametrize("offset", [301, -301, 86_400, -86_400])
def test_verify_rejects_timestamp_outside_tolerance(offset: int) -> None:
    """A timestamp more than 300 s from now, in either direction, is refused."""
    assert not verify_signature(SECRET, TS, RAW, signed(RAW), now=int(TS) + offset)


@pytest.mark.parametrize("offset", [300, -300])
def test_verify_accepts_timestamp_at_tolerance_edge(offset: int) -> None:
    """A timestamp exactly 300 s from now is still accepted."""
    assert verify_signature(SECRET, TS, RAW, signed(RAW), now=int(TS) + offset)


def test_verify_honours_custom_tolerance() -> None:
    """A smaller tolerance refuses a timestamp the default would accept."""
    assert not verify_signature(SECRET, TS, RAW, signed(RAW), now=int(TS) + 61, tolerance=60)


def test_verify_uses_the_real_clock_by_default() -> None:
    """Without ``now``, a timestamp of the current time verifies."""
    timestamp = str(int(time.time()))

    assert verify_signature(SECRET, timestamp, RAW, signed(RAW, timestamp))


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("v1=", id="no-value"),
        pytest.param("v1", id="no-equals"),
        pytest.param("garbage", id="garbage"),
        pytest.param("v1=" + "zz" * 32, id="not-hex"),
        pytest.param(signed(RAW)[:-1], id="truncated"),
        pytest.param(signed(RAW) + "0", id="too-long"),
        pytest.param(signed(RAW).removeprefix("v1="), id="no-scheme"),
        pytest.param(signed(RAW).replace("v1=", "v2="), id="other-scheme"),
        pytest.param(signed(RAW).replace("v1=", "v1 = "), id="spaced-equals"),
        pytest.param("v1=" + "é" * 64, id="non-ascii"),
    ],
)
def test_verify_rejects_malformed_header(header: str) -> None:
    """A signature header without a well-formed matching v1 value is refused, without raising."""
    assert not verify_signature(SECRET, TS, RAW, header, now=int(TS))


def test_verify_rejects_oversized_header() -> None:
    """A header longer than 4096 characters is refused even if it holds the right value."""
    header = " ".join([signed(RAW)] + ["v1=" + "0" * 64] * 60)

    assert not verify_signature(SECRET, TS, RAW, header, now=int(TS))


@pytest.mark.parametrize(
    "timestamp", ["", "abc", "1700000000.5", "-1700000000", "+1700000000", " 1700000000", "１７"]
)
def test_verify_rejects_malformed_timestamp(timestamp: str) -> None:
    """A timestamp that is not plain ASCII decimal digits is refused, without raising."""
    assert not verify_signature(SECRET, timestamp, RAW, signed(RAW), now=int(TS))


@pytest.mark.parametrize(
    "template",
    ["v1={old} v1={new}", "v1={new} v1={old}", "v1={old},v1={new}", "v1={old}, v1={new}"],
)
def test_verify_accepts_when_one_of_two_values_matches(template: str) -> None:
    """During key rotation, a header with an old and a new signature verifies."""
    old = signed(RAW, secret=b"retired-secret-retired-secret-00").removeprefix("v1=")
    new = signed(RAW).removeprefix("v1=")

    assert verify_signature(SECRET, TS, RAW, template.format(old=old, new=new), now=int(TS))


def test_verify_ignores_other_schemes_beside_v1() -> None:
    """Values of unknown schemes next to a matching v1 value do not prevent verification."""
    header = "v0=abc " + signed(RAW)

    assert verify_signature(SECRET, TS, RAW, header, now=int(TS))


def test_verify_refuses_negative_tolerance() -> None:
    """A negative tolerance is a programming error."""
    with pytest.raises(ValueError, match="tolerance"):
        verify_signature(SECRET, TS, RAW, signed(RAW), now=int(TS), tolerance=-1)


# Construction -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["", "/v1/messages", "sms-gateway.test/v1", "ftp://sms-gateway.test/", "http://"]
)
async def test_constructor_refuses_non_http_url(url: str) -> None:
    """The gateway URL must be an absolute http(s) URL."""
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="url"):
            HttpGatewaySender(client, url, SECRET)


async def test_constructor_refuses_empty_secret() -> None:
    """An empty signing secret is refused."""
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="secret"):
            HttpGatewaySender(client, URL, b"")


async def test_is_a_live_sender(connect: Connect) -> None:
    """The sender satisfies the Sender protocol as the live ``http_gateway`` plug-in."""
    sender = connect(respond(200))

    assert isinstance(sender, Sender)
    assert (sender.name, sender.sandbox) == ("http_gateway", False)


async def test_repr_shows_no_secret(connect: Connect) -> None:
    """The repr names the URL but never the secret."""
    sender = connect(respond(200))

    assert SECRET.decode() not in repr(sender)
    assert URL in repr(sender)
