"""Tencent Cloud adapters: TC3 known answers, then FaceID and SMS against a mocked Tencent.

The mocked provider (:class:`FakeTencent`, an ``httpx.MockTransport`` handler) is the edge we do
not own. On every request it recomputes the TC3 signature from the bytes received, with the
test secret and an implementation of the documented algorithm written here independently of
``app.providers.tencent``; checks the action, version and timestamp headers; and checks that no
subject field appears in the URL or any header. Only then does it answer, with bodies shaped
as in Tencent's API reference.

Known-answer vectors
--------------------
``DOC_*``: the worked example of Tencent Cloud's "Signature v3" page (CVM ``DescribeInstances``,
timestamp 1551113065, SecretKey ``Gu5t9xGARNpq86cd98joQYCN3EXAMPLE``, signed headers
``content-type;host``): payload hash ``35e9c5b0…``, canonical-request hash ``5ffe6a04…`` and
signature ``72e494ea…`` are all printed on the page.
``DOC_ACTION_*``: the revision of the same page that also signs ``x-tc-action``, whose example
key is printed masked as ``Gu5t9xGARNpq86cd98joQYCN3*******``; the published signature
``be4f67d3…`` is what the algorithm gives with that masked string as the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from app.providers import ProviderResponseError, ProviderTransportError
from app.providers.breaker import BreakerState, CircuitBreaker
from app.providers.tencent import call, sign_tc3
from app.senders.base import OutgoingSms, Sender, SendResult
from app.senders.tencent_sms import TencentSmsSender
from app.verifiers.base import CheckOutcome, CheckResult, Subject, Verifier, run_check
from app.verifiers.tencent_faceid import TencentIdCardVerifier, TencentPhoneVerifier

SECRET_ID = "AKIDtestTESTtestTESTtestTESTtest0000"
SECRET_KEY = "test-secret-key-for-tc3-signing00"
NOW = 1_700_000_000
REQUEST_ID = "0b5e8a3c-1f4d-4e2a-9c6b-7d8e9f0a1b2c"
SUBJECT = Subject("王小明", "440305199003071236", "+8613912345678")
NATIONAL_PHONE = "13912345678"
CODE = "482913"
MESSAGE = OutgoingSms(
    message_id="job-7f3a",
    phone=SUBJECT.phone,
    template="otp",
    params={"code": CODE, "ttl_minutes": "5"},
    body=f"Your code is {CODE}, valid for 5 minutes",
)
PERSONAL = (SUBJECT.real_name, SUBJECT.id_number, SUBJECT.phone, NATIONAL_PHONE, CODE)

DOC_PAYLOAD = (
    b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
)
DOC_TIMESTAMP = 1551113065


# --- The provider, as seen on the wire -------------------------------------------------------


def tc3_authorization(request: httpx.Request) -> str:
    """Recompute ``Authorization`` from the request as received (documented algorithm)."""
    match = re.search(r"SignedHeaders=([a-z;-]+),", request.headers["authorization"])
    assert match is not None
    names = match.group(1).split(";")
    assert names == ["content-type", "host", "x-tc-action"]
    timestamp = int(request.headers["x-tc-timestamp"])
    date = datetime.fromtimestamp(timestamp, UTC).date().isoformat()
    service = request.url.host.split(".")[0]
    canonical = "\n".join(
        [
            request.method,
            request.url.path,
            request.url.query.decode(),
            "".join(f"{name}:{request.headers[name].strip().lower()}\n" for name in names),
            ";".join(names),
            hashlib.sha256(request.content).hexdigest(),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{digest}"
    key = f"TC3{SECRET_KEY}".encode()
    for part in (date, service, "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )


def assert_no_personal_data(request: httpx.Request) -> None:
    """No subject field (plain or percent-encoded) in the URL or in any header."""
    exposed = [str(request.url), *request.headers.values()]
    for value in PERSONAL:
        for text in exposed:
            assert value not in text
            assert quote(value) not in text


@dataclass
class FakeTencent:
    """Tencent Cloud API 3.0: verifies each request, then plays back replies (the last repeats)."""

    action: str
    version: str
    replies: list[httpx.Response | Exception]
    region: str | None = None
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert (request.method, request.url.path, request.url.query) == ("POST", "/", b"")
        assert request.headers["authorization"] == tc3_authorization(request)
        assert request.headers["x-tc-action"] == self.action
        assert request.headers["x-tc-version"] == self.version
        assert request.headers["x-tc-timestamp"] == str(NOW)
        assert request.headers.get("x-tc-region") == self.region
        assert request.headers["content-type"] == "application/json; charset=utf-8"
        assert_no_personal_data(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def answer(**fields: Any) -> httpx.Response:
    """A documented ``{"Response": {...}}`` body with a RequestId."""
    return httpx.Response(200, json={"Response": {**fields, "RequestId": REQUEST_ID}})


def error(code: str) -> httpx.Response:
    return answer(Error={"Code": code, "Message": "error message from Tencent"})


@dataclass
class FakeSleep:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


Connect = Callable[[FakeTencent], httpx.AsyncClient]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Builds AsyncClients over a FakeTencent and closes them after the test."""
    clients: list[httpx.AsyncClient] = []

    def build(fake: FakeTencent) -> httpx.AsyncClient:
        clients.append(httpx.AsyncClient(transport=httpx.MockTransport(fake)))
        return clients[-1]

    yield build
    for client in clients:
        await client.aclose()


@pytest.fixture
async def idle_client() -> AsyncIterator[httpx.AsyncClient]:
    """A client for tests that make no request."""
    async with httpx.AsyncClient() as client:
        yield client


def id_fake(*replies: httpx.Response | Exception) -> FakeTencent:
    return FakeTencent("IdCardVerification", "2018-03-01", list(replies))


def phone_fake(*replies: httpx.Response | Exception) -> FakeTencent:
    return FakeTencent("PhoneVerification", "2018-03-01", list(replies))


def sms_fake(*replies: httpx.Response | Exception) -> FakeTencent:
    return FakeTencent("SendSms", "2021-01-11", list(replies), region="ap-guangzhou")


def build_verifier(
    cls: type[TencentIdCardVerifier | TencentPhoneVerifier],
    client: httpx.AsyncClient,
    **options: Any,
) -> TencentIdCardVerifier | TencentPhoneVerifier:
    options.setdefault("sleep", FakeSleep())
    return cls(client, secret_id=SECRET_ID, secret_key=SECRET_KEY, clock=lambda: NOW, **options)


def build_sender(client: httpx.AsyncClient) -> TencentSmsSender:
    return TencentSmsSender(
        client,
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        sdk_app_id="1400006666",
        sign_name="测试签名",
        template_id="1110",
        clock=lambda: NOW,
    )


def summary(result: CheckResult) -> tuple[CheckOutcome, str | None, bool]:
    return result.outcome, result.reason, result.billable


# --- TC3 signing: known answers --------------------------------------------------------------


def test_tc3_reproduces_documentation_example() -> None:
    """The "Signature v3" example (content-type;host) gives the published intermediate values."""
    signed = sign_tc3(
        secret_id="AKID**********************0123456789EXAMPLE",
        secret_key="Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
        service="cvm",
        host="cvm.tencentcloudapi.com",
        action="DescribeInstances",
        version="2017-03-12",
        payload=DOC_PAYLOAD,
        timestamp=DOC_TIMESTAMP,
        region="ap-guangzhou",
        sign_action=False,
    )

    assert signed.canonical_request.endswith(
        "\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    assert signed.string_to_sign == (
        "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    )
    assert signed.authorization == (
        "TC3-HMAC-SHA256 Credential=AKID**********************0123456789EXAMPLE/2019-02-25/cvm/"
        "tc3_request, SignedHeaders=content-type;host, "
        "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )
    assert signed.headers == {
        "Authorization": signed.authorization,
        "Content-Type": "application/json; charset=utf-8",
        "Host": "cvm.tencentcloudapi.com",
        "X-TC-Action": "DescribeInstances",
        "X-TC-Version": "2017-03-12",
        "X-TC-Timestamp": "1551113065",
        "X-TC-Region": "ap-guangzhou",
    }


def test_tc3_with_signed_action_reproduces_documentation_example() -> None:
    """The revision signing x-tc-action (masked example key) gives the published signature."""
    signed = sign_tc3(
        secret_id="AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******",
        secret_key="Gu5t9xGARNpq86cd98joQYCN3*******",
        service="cvm",
        host="cvm.tencentcloudapi.com",
        action="DescribeInstances",
        version="2017-03-12",
        payload=DOC_PAYLOAD,
        timestamp=DOC_TIMESTAMP,
    )

    assert "\nx-tc-action:describeinstances\n" in signed.canonical_request
    assert signed.authorization == (
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******/2019-02-25/cvm/"
        "tc3_request, SignedHeaders=content-type;host;x-tc-action, "
        "Signature=be4f67d323c78ab9acb7395e43c0dbcf822a9cfac32fea2449a7bc7726b770a3"
    )


def test_tc3_reproduces_current_documentation_example() -> None:
    """The current "Signature v3" example (masked AKID/key, x-tc-action signed) gives the
    published hashed canonical request and signature 10b1a37a…."""
    signed = sign_tc3(
        secret_id="AKID" + "*" * 32,
        secret_key="*" * 32,
        service="cvm",
        host="cvm.tencentcloudapi.com",
        action="DescribeInstances",
        version="2017-03-12",
        payload=DOC_PAYLOAD,
        timestamp=DOC_TIMESTAMP,
        region="ap-guangzhou",
    )

    assert signed.string_to_sign.endswith(
        "\n7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
    )
    assert signed.signature == "10b1a37a7301a02ca19a647ad722d5e43b4b3cff309d421d85b46093f6ab6c4f"


def test_tc3_sends_the_sts_token_unsigned() -> None:
    """A session token goes in X-TC-Token and does not change the signature."""
    request: dict[str, Any] = {
        "secret_id": "id",
        "secret_key": "key",
        "service": "sms",
        "host": "sms.tencentcloudapi.com",
        "action": "SendSms",
        "version": "2021-01-11",
        "payload": b"{}",
        "timestamp": DOC_TIMESTAMP,
    }
    plain = sign_tc3(**request)
    with_token = sign_tc3(**request, token="sts-session")

    assert with_token.headers["X-TC-Token"] == "sts-session"
    assert "X-TC-Token" not in plain.headers
    assert with_token.signature == plain.signature


# --- call() ----------------------------------------------------------------------------------


async def test_call_returns_the_response_object(connect: Connect) -> None:
    """A signed call returns the parsed Response object and sends the payload as JSON."""
    fake = FakeTencent("SendSms", "2021-01-11", [answer(Result="x")], region="ap-guangzhou")

    response = await call(
        connect(fake),
        host="sms.tencentcloudapi.com",
        service="sms",
        action="SendSms",
        version="2021-01-11",
        region="ap-guangzhou",
        payload={"A": "b"},
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        clock=lambda: NOW,
    )

    assert response == {"Result": "x", "RequestId": REQUEST_ID}
    assert fake.body() == {"A": "b"}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.ConnectError("refused"), "unavailable"),
        (httpx.Response(503, text="busy"), "unavailable"),
    ],
)
async def test_call_raises_transport_error(
    connect: Connect, reply: httpx.Response | Exception, expected: str
) -> None:
    """Timeouts, network errors and gateway statuses raise ProviderTransportError."""
    with pytest.raises(ProviderTransportError) as caught:
        await call(
            connect(id_fake(reply)),
            host="faceid.tencentcloudapi.com",
            service="faceid",
            action="IdCardVerification",
            version="2018-03-01",
            region=None,
            payload={},
            secret_id=SECRET_ID,
            secret_key=SECRET_KEY,
            clock=lambda: NOW,
        )
    assert caught.value.reason == expected


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, text="<html>"),
        httpx.Response(200, json=["Response"]),
        httpx.Response(200, json={"Response": "0"}),
    ],
)
async def test_call_raises_response_error_on_undocumented_body(
    connect: Connect, reply: httpx.Response
) -> None:
    """A body that is not {"Response": {...}} raises ProviderResponseError."""
    with pytest.raises(ProviderResponseError):
        await call(
            connect(id_fake(reply)),
            host="faceid.tencentcloudapi.com",
            service="faceid",
            action="IdCardVerification",
            version="2018-03-01",
            region=None,
            payload={},
            secret_id=SECRET_ID,
            secret_key=SECRET_KEY,
            clock=lambda: NOW,
        )


# --- FaceID verifiers ------------------------------------------------------------------------

ID_CASES = [
    ("0", "姓名和身份证号一致", CheckOutcome.PASSED, None, True),
    ("-1", "姓名和身份证号不一致", CheckOutcome.FAILED, "id_mismatch", True),
    ("-2", "非法身份证号", CheckOutcome.FAILED, "invalid_identity", False),
    ("-3", "非法姓名", CheckOutcome.FAILED, "invalid_identity", False),
    ("-4", "证件库服务异常", CheckOutcome.UNAVAILABLE, "registry_unavailable", False),
    ("-5", "证件库中无此身份证记录", CheckOutcome.FAILED, "id_not_found", False),
    ("-6", "权威比对系统升级中", CheckOutcome.UNAVAILABLE, "registry_maintenance", False),
    ("-7", "认证次数超过当日限制", CheckOutcome.UNAVAILABLE, "registry_quota_exceeded", False),
]
PHONE_CASES = [
    ("0", "认证通过", CheckOutcome.PASSED, None, True),
    ("-4", "三要素信息不一致", CheckOutcome.FAILED, "phone_mismatch", True),
    ("-6", "手机号码不合法", CheckOutcome.FAILED, "invalid_identity", False),
    ("-7", "身份证号码有误", CheckOutcome.FAILED, "invalid_identity", False),
    ("-8", "姓名校验不通过", CheckOutcome.FAILED, "invalid_identity", False),
    ("-9", "没有记录", CheckOutcome.FAILED, "id_not_found", False),
    ("-11", "验证中心服务繁忙", CheckOutcome.UNAVAILABLE, "registry_unavailable", False),
    ("-12", "认证次数超过当日限制", CheckOutcome.UNAVAILABLE, "registry_quota_exceeded", False),
    ("-13", "该号段不支持验证", CheckOutcome.UNAVAILABLE, "phone_unsupported", False),
]
ERROR_CASES = [
    ("AuthFailure.SignatureFailure", CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    ("AuthFailure.SignatureExpire", CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    ("UnauthorizedOperation.Arrears", CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    ("UnauthorizedOperation.Nonactivated", CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    ("RequestLimitExceeded", CheckOutcome.UNAVAILABLE, "registry_rate_limited"),
    ("LimitExceeded", CheckOutcome.UNAVAILABLE, "registry_quota_exceeded"),
    ("InvalidParameterValue", CheckOutcome.FAILED, "invalid_identity"),
    ("InvalidParameterValue.IdCard", CheckOutcome.FAILED, "invalid_identity"),
    ("MissingParameter", CheckOutcome.UNAVAILABLE, "provider_bad_request"),
    ("InvalidParameter", CheckOutcome.UNAVAILABLE, "provider_bad_request"),
    ("InternalError", CheckOutcome.UNAVAILABLE, "registry_unavailable"),
    ("FailedOperation.UnKnown", CheckOutcome.UNAVAILABLE, "registry_unavailable"),
    ("InvalidAction", CheckOutcome.UNAVAILABLE, "registry_bad_response"),
]


@pytest.mark.parametrize(("result", "description", "outcome", "reason", "billable"), ID_CASES)
async def test_id_card_result_maps_to_documented_check_result(
    connect: Connect,
    result: str,
    description: str,
    outcome: CheckOutcome,
    reason: str | None,
    billable: bool,
) -> None:
    """Each documented IdCardVerification Result gives its CheckResult and billing flag."""
    fake = id_fake(answer(Result=result, Description=description))
    verifier = build_verifier(TencentIdCardVerifier, connect(fake))

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert summary(checked) == (outcome, reason, billable)
    assert checked.provider_reference == REQUEST_ID


@pytest.mark.parametrize(("result", "description", "outcome", "reason", "billable"), PHONE_CASES)
async def test_phone_result_maps_to_documented_check_result(
    connect: Connect,
    result: str,
    description: str,
    outcome: CheckOutcome,
    reason: str | None,
    billable: bool,
) -> None:
    """Each documented PhoneVerification Result gives its CheckResult and billing flag."""
    fake = phone_fake(answer(Result=result, Description=description, Isp="移动"))
    verifier = build_verifier(TencentPhoneVerifier, connect(fake))

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert summary(checked) == (outcome, reason, billable)


@pytest.mark.parametrize(("code", "outcome", "reason"), ERROR_CASES)
async def test_error_code_maps_to_unbilled_result(
    connect: Connect, code: str, outcome: CheckOutcome, reason: str
) -> None:
    """Response.Error codes map by family, are never billed and never pass."""
    verifier = build_verifier(TencentIdCardVerifier, connect(id_fake(error(code))))

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert summary(checked) == (outcome, reason, False)


@pytest.mark.parametrize(
    "body",
    [{"Result": "1"}, {"Result": 0}, {"Result": "-1 "}, {}, {"Error": "AuthFailure"}],
)
async def test_undocumented_answer_is_bad_response(connect: Connect, body: dict[str, Any]) -> None:
    """An unknown or malformed Result or Error fails closed as registry_bad_response."""
    verifier = build_verifier(TencentIdCardVerifier, connect(id_fake(answer(**body))))

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert checked == CheckResult.unavailable(
        "registry_bad_response", provider_reference=REQUEST_ID
    )


async def test_error_takes_precedence_over_result(connect: Connect) -> None:
    """A Response holding both Error and Result is mapped by the Error."""
    reply = answer(Result="0", Error={"Code": "InternalError", "Message": "m"})
    verifier = build_verifier(TencentIdCardVerifier, connect(id_fake(reply)))

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert checked.reason == "registry_unavailable"


async def test_id_card_request_carries_fields_in_body_only(connect: Connect) -> None:
    """IdCardVerification sends name and ID number in the JSON body, without a region."""
    fake = id_fake(answer(Result="0"))

    await build_verifier(TencentIdCardVerifier, connect(fake)).check(SUBJECT, attempt_key="a-1")

    assert fake.body() == {"IdCard": SUBJECT.id_number, "Name": SUBJECT.real_name}
    assert fake.requests[0].url.host == "faceid.tencentcloudapi.com"


async def test_phone_request_sends_national_number_in_simple_mode(connect: Connect) -> None:
    """PhoneVerification sends the 11-digit national number and VerifyMode 0."""
    fake = phone_fake(answer(Result="0"))

    await build_verifier(TencentPhoneVerifier, connect(fake)).check(SUBJECT, attempt_key="a-1")

    assert fake.body() == {
        "IdCard": SUBJECT.id_number,
        "Name": SUBJECT.real_name,
        "Phone": NATIONAL_PHONE,
        "VerifyMode": "0",
    }


async def test_non_mainland_phone_is_not_sent(connect: Connect) -> None:
    """A phone outside mainland China is unavailable/phone_unsupported without a request."""
    fake = phone_fake(answer(Result="0"))
    subject = Subject(SUBJECT.real_name, SUBJECT.id_number, "+85291234567")

    checked = await build_verifier(TencentPhoneVerifier, connect(fake)).check(
        subject, attempt_key="a-1"
    )

    assert checked == CheckResult.unavailable("phone_unsupported")
    assert fake.requests == []


async def test_transport_failures_are_retried_then_answer_counts(connect: Connect) -> None:
    """A timeout and a 503 are retried with back-off; the third answer is used."""
    fake = id_fake(httpx.ReadTimeout("slow"), httpx.Response(503), answer(Result="0"))
    sleep = FakeSleep()
    verifier = build_verifier(TencentIdCardVerifier, connect(fake), sleep=sleep)

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert summary(checked) == (CheckOutcome.PASSED, None, True)
    assert len(fake.requests) == 3
    assert len(sleep.delays) == 2


async def test_exhausted_retries_are_registry_unavailable(connect: Connect) -> None:
    """When every attempt times out the result is unavailable/registry_unavailable."""
    fake = id_fake(httpx.ConnectTimeout("slow"))
    verifier = build_verifier(TencentIdCardVerifier, connect(fake), max_attempts=2)

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert checked == CheckResult.unavailable("registry_unavailable")
    assert len(fake.requests) == 2


async def test_breaker_opens_and_stops_requests(connect: Connect) -> None:
    """After the breaker opens, checks are circuit_open and send nothing."""
    fake = id_fake(httpx.Response(502))
    breaker = CircuitBreaker(failure_threshold=1)
    verifier = build_verifier(TencentIdCardVerifier, connect(fake), max_attempts=1, breaker=breaker)

    first = await verifier.check(SUBJECT, attempt_key="a-1")
    second = await verifier.check(SUBJECT, attempt_key="a-1")

    assert (first.reason, second.reason) == ("registry_unavailable", "circuit_open")
    assert breaker.state is BreakerState.OPEN
    assert len(fake.requests) == 1


async def test_only_a_uuid_request_id_is_kept(connect: Connect) -> None:
    """A RequestId that is not a UUID (it could echo anything) is not stored."""
    reply = httpx.Response(200, json={"Response": {"Result": "0", "RequestId": SUBJECT.phone}})
    verifier = build_verifier(TencentIdCardVerifier, connect(id_fake(reply)))

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert checked.outcome is CheckOutcome.PASSED
    assert checked.provider_reference is None


async def test_logs_hold_no_personal_data(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing logged during a check contains a subject field."""
    caplog.set_level(logging.DEBUG)
    fake = phone_fake(answer(Result="-4", Description="三要素信息不一致"))

    await build_verifier(TencentPhoneVerifier, connect(fake)).check(SUBJECT, attempt_key="a-1")

    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert caplog.records
    for value in PERSONAL:
        assert value not in logged


async def test_verifier_from_env_names_missing_variables_only(
    idle_client: httpx.AsyncClient,
) -> None:
    """from_env raises ValueError naming the missing variables, never a value."""
    env = {"REALNAME_TENCENT_SECRET_ID": "AKIDvisible", "REALNAME_TENCENT_SECRET_KEY": "  "}

    with pytest.raises(ValueError, match="REALNAME_TENCENT_SECRET_KEY") as caught:
        TencentIdCardVerifier.from_env(idle_client, env)

    assert "AKIDvisible" not in str(caught.value)
    assert "REALNAME_TENCENT_SECRET_ID" not in str(caught.value)


async def test_verifier_from_env_builds_from_credentials(idle_client: httpx.AsyncClient) -> None:
    """from_env builds a verifier from the two credential variables."""
    env = {"REALNAME_TENCENT_SECRET_ID": "AKIDx", "REALNAME_TENCENT_SECRET_KEY": "key"}

    verifier = TencentPhoneVerifier.from_env(idle_client, env)

    assert isinstance(verifier, TencentPhoneVerifier)
    assert "key" not in repr(verifier)


# --- Contract ----------------------------------------------------------------------------------

VERIFIERS = [TencentIdCardVerifier, TencentPhoneVerifier]
IDENTITY = {
    TencentIdCardVerifier: ("tencent_faceid_id2", "id_registry"),
    TencentPhoneVerifier: ("tencent_faceid_phone3", "carrier_3e"),
}
ACTIONS = {TencentIdCardVerifier: "IdCardVerification", TencentPhoneVerifier: "PhoneVerification"}


@pytest.mark.parametrize("cls", VERIFIERS)
async def test_verifier_declares_its_identity(
    idle_client: httpx.AsyncClient, cls: type[TencentIdCardVerifier | TencentPhoneVerifier]
) -> None:
    """Each verifier satisfies the Protocol with its documented name and type, not sandbox."""
    verifier = build_verifier(cls, idle_client)

    assert isinstance(verifier, Verifier)
    assert (verifier.name, verifier.check_type, verifier.sandbox) == (*IDENTITY[cls], False)


@pytest.mark.parametrize("cls", VERIFIERS)
async def test_transport_exception_is_unavailable_never_passed(
    connect: Connect, cls: type[TencentIdCardVerifier | TencentPhoneVerifier]
) -> None:
    """An exception raised by the transport yields unavailable/verifier_error via run_check."""
    fake = FakeTencent(ACTIONS[cls], "2018-03-01", [RuntimeError("transport exploded")])

    result = await run_check(build_verifier(cls, connect(fake)), SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("verifier_error")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("cls", VERIFIERS)
@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, json={}),
        httpx.Response(200, json={"Response": {"Result": "0", "Error": {"Code": 5}}}),
        httpx.Response(500, json={"Response": {"Error": {"Code": "InternalError"}}}),
        httpx.Response(200, content=b"\xff\xfe"),
    ],
)
async def test_garbage_answer_never_passes(
    connect: Connect,
    cls: type[TencentIdCardVerifier | TencentPhoneVerifier],
    reply: httpx.Response,
) -> None:
    """Whatever a broken provider answers, the check is unavailable, never passed."""
    fake = FakeTencent(ACTIONS[cls], "2018-03-01", [reply])

    result = await build_verifier(cls, connect(fake)).check(SUBJECT, attempt_key="a-1")

    assert result.outcome is CheckOutcome.UNAVAILABLE


# --- SMS sender --------------------------------------------------------------------------------


def send_status(code: str, serial: str = "5000:1045710669157053657849499619") -> httpx.Response:
    """A documented SendSms answer for one number."""
    status = {
        "SerialNo": serial,
        "PhoneNumber": SUBJECT.phone,
        "Fee": 1,
        "SessionContext": MESSAGE.message_id,
        "Code": code,
        "Message": "send success" if code == "Ok" else "failed",
        "IsoCode": "CN",
    }
    return answer(SendStatusSet=[status])


SMS_CASES = [
    (send_status("LimitExceeded.PhoneNumberThirtySecondLimit"), False, "provider_rate_limited"),
    (send_status("LimitExceeded.PhoneNumberOneHourLimit"), False, "provider_rate_limited"),
    (send_status("LimitExceeded.PhoneNumberDailyLimit"), False, "provider_rate_limited"),
    (send_status("LimitExceeded.DeliveryFrequencyLimit"), False, "provider_rate_limited"),
    (send_status("LimitExceeded.AppDailyLimit"), False, "provider_quota_exceeded"),
    (send_status("InternalError.Timeout"), True, "provider_unavailable"),
    (send_status("InvalidParameterValue.IncorrectPhoneNumber"), False, "invalid_recipient"),
    (send_status("FailedOperation.PhoneNumberInBlacklist"), False, "invalid_recipient"),
    (send_status("FailedOperation.TemplateIncorrectOrUnapproved"), False, "provider_rejected"),
    (error("AuthFailure.SignatureFailure"), False, "provider_auth_failed"),
    (error("UnauthorizedOperation.SmsSdkAppIdVerifyFail"), False, "provider_auth_failed"),
    (error("RequestLimitExceeded"), True, "provider_throttled"),
    (error("InternalError"), True, "provider_unavailable"),
    (error("FailedOperation.SignatureIncorrectOrUnapproved"), False, "provider_rejected"),
    (answer(SendStatusSet=[]), True, "provider_bad_response"),
    (httpx.Response(200, text="oops"), True, "provider_bad_response"),
    (send_status("LimitExceeded.PhoneNumberCountLimit"), False, "provider_rejected"),
    (send_status("LimitExceeded.PhoneNumberSameContentDailyLimit"), False, "provider_rate_limited"),
    (httpx.ConnectTimeout("slow"), True, "timeout"),
    (httpx.ReadTimeout("slow"), False, "delivery_unknown"),
    (httpx.Response(504), True, "provider_unavailable"),
]


async def test_sms_request_is_documented_send_sms(connect: Connect) -> None:
    """SendSms carries the E.164 number, app, sign, template and [code, ttl] in the body."""
    fake = sms_fake(send_status("Ok"))

    await build_sender(connect(fake)).send(MESSAGE)

    assert fake.body() == {
        "PhoneNumberSet": [SUBJECT.phone],
        "SmsSdkAppId": "1400006666",
        "TemplateId": "1110",
        "SignName": "测试签名",
        "TemplateParamSet": [CODE, "5"],
        "SessionContext": MESSAGE.message_id,
    }


async def test_sms_ok_is_delivered_with_serial_no(connect: Connect) -> None:
    """Code Ok is delivered, with the SerialNo as provider reference."""
    sender = build_sender(connect(sms_fake(send_status("Ok"))))

    result = await sender.send(MESSAGE)

    assert result == SendResult(
        delivered=True, provider_reference="5000:1045710669157053657849499619"
    )


async def test_sms_serial_no_echoing_the_code_is_dropped(connect: Connect) -> None:
    """A SerialNo that contains the code is not kept as a reference."""
    sender = build_sender(connect(sms_fake(send_status("Ok", serial=f"x{CODE}"))))

    result = await sender.send(MESSAGE)

    assert result == SendResult(delivered=True, provider_reference=None)


@pytest.mark.parametrize(("reply", "retriable", "reason"), SMS_CASES)
async def test_sms_failure_maps_to_documented_send_result(
    connect: Connect, reply: httpx.Response | Exception, retriable: bool, reason: str
) -> None:
    """Each documented failure gives its reason and retriability, never delivered."""
    result = await build_sender(connect(sms_fake(reply))).send(MESSAGE)

    assert result == SendResult(delivered=False, retriable=retriable, reason=reason)


async def test_sms_logs_hold_no_personal_data(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing logged during a send contains the phone or the code."""
    caplog.set_level(logging.DEBUG)

    await build_sender(connect(sms_fake(send_status("LimitExceeded.AppDailyLimit")))).send(MESSAGE)

    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    for value in PERSONAL:
        assert value not in logged


async def test_sms_sender_satisfies_protocol(idle_client: httpx.AsyncClient) -> None:
    """TencentSmsSender is a live Sender named tencent_sms."""
    sender = build_sender(idle_client)

    assert isinstance(sender, Sender)
    assert (sender.name, sender.sandbox) == ("tencent_sms", False)


async def test_sms_from_env_names_missing_variables_only(idle_client: httpx.AsyncClient) -> None:
    """from_env names every missing SMS variable and no value."""
    env = {"REALNAME_TENCENT_SECRET_ID": "AKIDvisible", "REALNAME_TENCENT_SECRET_KEY": "k"}

    with pytest.raises(ValueError, match="REALNAME_TENCENT_SMS_SDK_APP_ID") as caught:
        TencentSmsSender.from_env(idle_client, env)

    message = str(caught.value)
    assert "REALNAME_TENCENT_SMS_SIGN_NAME" in message
    assert "REALNAME_TENCENT_SMS_TEMPLATE_ID" in message
    assert "REALNAME_TENCENT_REGION" not in message
    assert "AKIDvisible" not in message


async def test_sms_from_env_defaults_region_to_guangzhou(idle_client: httpx.AsyncClient) -> None:
    """Without REALNAME_TENCENT_REGION the sender uses ap-guangzhou."""
    env = {
        "REALNAME_TENCENT_SECRET_ID": "AKIDx",
        "REALNAME_TENCENT_SECRET_KEY": "k",
        "REALNAME_TENCENT_SMS_SDK_APP_ID": "1400006666",
        "REALNAME_TENCENT_SMS_SIGN_NAME": "sign",
        "REALNAME_TENCENT_SMS_TEMPLATE_ID": "1110",
    }

    sender = TencentSmsSender.from_env(idle_client, env)

    assert "region='ap-guangzhou'" in repr(sender)
