"""Alibaba Cloud adapters: ACS3 known answer, then cloudauth and SMS against a mocked Alibaba Cloud.

The mocked provider (:class:`FakeAliyun`, an ``httpx.MockTransport`` handler) is the edge we do
not own. On every request it recomputes the ACS3 signature from the bytes received, with the
test secret and an implementation of the documented algorithm written here independently of
``app.providers.aliyun``; checks the action, version, date, nonce and body-hash headers; and
checks that no subject field appears in the URL or any header. Only then does it answer, with
bodies shaped as in Alibaba Cloud's API reference.

Known-answer vector
-------------------
The fixed-parameter example of Alibaba Cloud's "V3 request structure and signature" page: ECS
``RunInstances`` (2014-05-26) on ``ecs.cn-shanghai.aliyuncs.com``, query
``ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai``, empty
body, ``x-acs-date`` 2023-10-26T10:22:32Z, nonce ``3156853299f313e23d1673dc12e1703d``,
``YourAccessKeyId`` / ``YourAccessKeySecret``: canonical-request hash ``7ea06492…`` and
signature ``06563a9e…`` as published.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import pytest

from app.providers.aliyun import (
    acs3_date,
    authorize_acs3,
    call,
    canonical_headers,
    sign_acs3,
)
from app.providers.breaker import CircuitBreaker
from app.senders.aliyun_sms import AliyunSmsSender
from app.senders.base import OutgoingSms, Sender, SendResult
from app.verifiers.aliyun_cloudauth import AliyunId2MetaVerifier, AliyunMobile3MetaVerifier
from app.verifiers.base import CheckOutcome, CheckResult, Subject, Verifier, run_check

ACCESS_KEY_ID = "LTAItestTESTtest0000"
ACCESS_KEY_SECRET = "test-access-key-secret-000000"
NOW = 1_700_000_000
NOW_ACS = "2023-11-14T22:13:20Z"
REQUEST_ID = "D6163397-15C5-419C-9ACC-B7C83E0B4C10"
SUBJECT = Subject("王小明", "440305199003071236", "+8613912345678")
NATIONAL_PHONE = "13912345678"
CODE = "482913"
MESSAGE = OutgoingSms(
    message_id="job-7f3a",
    phone=SUBJECT.phone,
    template="otp",
    params={"code": CODE, "ttl_minutes": "5"},
    body=f"Your code is {CODE}",
)
PERSONAL = (SUBJECT.real_name, SUBJECT.id_number, SUBJECT.phone, NATIONAL_PHONE, CODE)
SIGNED = [
    "content-type",
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
]


def md5(value: str) -> str:
    return hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()


# --- The provider, as seen on the wire -------------------------------------------------------


def _rfc3986(value: str) -> str:
    return quote(value, safe="-_.~")


def acs3_authorization(request: httpx.Request) -> str:
    """Recompute ``Authorization`` from the request as received (documented algorithm)."""
    match = re.search(r"SignedHeaders=([a-z0-9;-]+),", request.headers["authorization"])
    assert match is not None
    names = match.group(1).split(";")
    expected = [name for name in SIGNED if name != "content-type" or request.content]
    if "x-acs-security-token" in request.headers:
        expected = sorted([*expected, "x-acs-security-token"])
    assert names == expected
    payload_hash = hashlib.sha256(request.content).hexdigest()
    assert request.headers["x-acs-content-sha256"] == payload_hash
    query = "&".join(
        f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in sorted(request.url.params.multi_items())
    )
    canonical = "\n".join(
        [
            request.method,
            request.url.path,
            query,
            "".join(f"{name}:{request.headers[name].strip()}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    signature = hmac.new(ACCESS_KEY_SECRET.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"ACS3-HMAC-SHA256 Credential={ACCESS_KEY_ID},"
        f"SignedHeaders={';'.join(names)},Signature={signature}"
    )


def assert_no_personal_data(request: httpx.Request, *, url: bool = True) -> None:
    """No subject field (plain or percent-encoded) in any header, nor (``url``) in the URL."""
    exposed = [*([str(request.url)] if url else []), *request.headers.values()]
    for value in PERSONAL:
        for text in exposed:
            assert value not in text
            assert quote(value) not in text


@dataclass
class FakeAliyun:
    """Alibaba Cloud OpenAPI: verifies each request, then plays back replies (the last repeats)."""

    host: str
    action: str
    version: str
    replies: list[httpx.Response | Exception]
    requests: list[httpx.Request] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    #: Where the API's parameters are expected: "body" (a form) or "query" (empty body).
    params_in: str = "body"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert (request.method, request.url.host, request.url.path) == ("POST", self.host, "/")
        if self.params_in == "query":
            assert request.content == b""
            assert "content-type" not in request.headers
        else:
            assert request.url.query == b""
            assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert request.headers["authorization"] == acs3_authorization(request)
        assert request.headers["x-acs-action"] == self.action
        assert request.headers["x-acs-version"] == self.version
        assert request.headers["x-acs-date"] == NOW_ACS
        nonce = request.headers["x-acs-signature-nonce"]
        assert re.fullmatch(r"[0-9a-f]{32}", nonce)
        assert nonce not in self.nonces
        self.nonces.add(nonce)
        assert_no_personal_data(request, url=self.params_in == "body")
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def form(self, index: int = -1) -> dict[str, str]:
        """The parameters as sent: the query string or the form body."""
        request = self.requests[index]
        raw = request.url.query if self.params_in == "query" else request.content
        return dict(parse_qsl(raw.decode("ascii"), strict_parsing=True))


def verdict(biz_code: Any, code: Any = "200", **extra: Any) -> httpx.Response:
    """A documented cloudauth answer with a ResultObject."""
    body = {
        "RequestId": REQUEST_ID,
        "Code": code,
        "Message": "success",
        "ResultObject": {"BizCode": biz_code, **extra},
    }
    return httpx.Response(200, json=body)


def failure(code: str, status: int = 200) -> httpx.Response:
    """A documented error body: cloudauth Code (HTTP 200) or a gateway error (HTTP 4xx/5xx)."""
    body = {"RequestId": REQUEST_ID, "Code": code, "Message": "error message from Alibaba"}
    return httpx.Response(status, json=body)


@dataclass
class FakeSleep:
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


Connect = Callable[[FakeAliyun], httpx.AsyncClient]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Builds AsyncClients over a FakeAliyun and closes them after the test."""
    clients: list[httpx.AsyncClient] = []

    def build(fake: FakeAliyun) -> httpx.AsyncClient:
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


def id_fake(*replies: httpx.Response | Exception) -> FakeAliyun:
    return FakeAliyun("cloudauth.aliyuncs.com", "Id2MetaVerify", "2019-03-07", list(replies))


def mobile_fake(*replies: httpx.Response | Exception) -> FakeAliyun:
    return FakeAliyun(
        "cloudauth.aliyuncs.com", "Mobile3MetaSimpleVerify", "2019-03-07", list(replies)
    )


def sms_fake(*replies: httpx.Response | Exception) -> FakeAliyun:
    return FakeAliyun(
        "dysmsapi.aliyuncs.com", "SendSms", "2017-05-25", list(replies), params_in="query"
    )


def build_verifier(
    cls: type[AliyunId2MetaVerifier | AliyunMobile3MetaVerifier],
    client: httpx.AsyncClient,
    **options: Any,
) -> AliyunId2MetaVerifier | AliyunMobile3MetaVerifier:
    options.setdefault("sleep", FakeSleep())
    return cls(
        client,
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        clock=lambda: NOW,
        **options,
    )


def build_sender(client: httpx.AsyncClient) -> AliyunSmsSender:
    return AliyunSmsSender(
        client,
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        sign_name="测试签名",
        template_code="SMS_154950909",
        clock=lambda: NOW,
    )


async def call_send_sms(
    client: httpx.AsyncClient, params: dict[str, str], **options: Any
) -> dict[str, Any]:
    """call() for SendSms with the test credentials and clock."""
    return await call(
        client,
        host="dysmsapi.aliyuncs.com",
        action="SendSms",
        version="2017-05-25",
        params=params,
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        clock=lambda: NOW,
        **options,
    )


def summary(result: CheckResult) -> tuple[CheckOutcome, str | None, bool]:
    return result.outcome, result.reason, result.billable


# --- ACS3 signing: known answer --------------------------------------------------------------


def test_acs3_reproduces_documentation_example() -> None:
    """The V3 signature page's fixed-parameter example gives the published signature."""
    signed = sign_acs3(
        access_key_id="YourAccessKeyId",
        access_key_secret="YourAccessKeySecret",
        method="POST",
        host="ecs.cn-shanghai.aliyuncs.com",
        action="RunInstances",
        version="2014-05-26",
        date="2023-10-26T10:22:32Z",
        nonce="3156853299f313e23d1673dc12e1703d",
        query={
            "ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            "RegionId": "cn-shanghai",
        },
    )

    assert signed.string_to_sign == (
        "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    )
    assert signed.authorization == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;"
        "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )
    assert signed.headers["x-acs-content-sha256"] == hashlib.sha256(b"").hexdigest()


def test_acs3_reproduces_official_sdk_duplicate_header_vector() -> None:
    """darabonba-openapi-util's test_get_authorization: x-acs-test and x-acs-TEST sign as one
    header with sorted values, an empty query value as its bare name (published signature)."""
    *_, authorization = authorize_acs3(
        method="GET",
        canonical_uri="",
        query={"test": "ok", "empty": ""},
        headers=[("x-acs-test", "http"), ("x-acs-TEST", "https")],
        hashed_payload="55e12e91650d2fec56ec74e1d3e4ddbfce2ef3a65890c2a19ecf88a307e76a23",
        access_key_id="acesskey",
        access_key_secret="secret",
    )

    assert authorization == (
        "ACS3-HMAC-SHA256 Credential=acesskey,SignedHeaders=x-acs-test,"
        "Signature=da772425f29289d3460d5fc961455d40c5e8c6afd0888b78a910c991e6a14846"
    )


def test_acs3_canonical_headers_merge_duplicates() -> None:
    """Duplicate names in any case become one lowercase line, values trimmed, sorted, joined."""
    lines, signed = canonical_headers([("X-Acs-B", " 2 "), ("host", "h"), ("x-acs-b", "1")])

    assert (lines, signed) == ("host:h\nx-acs-b:1,2\n", "host;x-acs-b")


def test_acs3_date_is_utc_iso8601() -> None:
    """x-acs-date is the UTC time in whole seconds with a Z suffix."""
    assert acs3_date(NOW + 0.9) == NOW_ACS


# --- call() ----------------------------------------------------------------------------------


async def test_call_sends_parameters_only_in_the_form_body(connect: Connect) -> None:
    """call() puts every parameter in the signed form body and returns the JSON answer."""
    fake = FakeAliyun(
        "dysmsapi.aliyuncs.com",
        "SendSms",
        "2017-05-25",
        [httpx.Response(400, json={"Code": "X", "RequestId": REQUEST_ID})],
    )

    body = await call_send_sms(connect(fake), {"B": "x y/z~", "A": "中"})

    assert body == {"Code": "X", "RequestId": REQUEST_ID}
    assert fake.requests[0].content == b"A=%E4%B8%AD&B=x%20y%2Fz~"


async def test_call_can_send_parameters_in_the_signed_query(connect: Connect) -> None:
    """params_in="query" puts every parameter, RFC 3986-encoded, in the signed query string."""
    fake = sms_fake(httpx.Response(400, json={"Code": "X", "RequestId": REQUEST_ID}))

    await call_send_sms(connect(fake), {"B": "x y/z~", "A": "中"}, params_in="query")

    assert fake.requests[0].url.query == b"A=%E4%B8%AD&B=x%20y%2Fz~"


async def test_call_uses_a_fresh_nonce_each_time(connect: Connect) -> None:
    """Two calls carry two different signature nonces."""
    fake = sms_fake(failure("OK"))
    client = connect(fake)
    for _ in range(2):
        await call_send_sms(client, {}, params_in="query")

    assert len(fake.nonces) == 2


# --- cloudauth verifiers ---------------------------------------------------------------------

BIZ_CASES = [
    ("1", CheckOutcome.PASSED, None, True),
    ("2", CheckOutcome.FAILED, "id_mismatch", True),
    ("3", CheckOutcome.FAILED, "id_not_found", False),
]
MOBILE_BIZ_CASES = [
    ("1", CheckOutcome.PASSED, None, True),
    ("2", CheckOutcome.FAILED, "phone_mismatch", True),
    ("3", CheckOutcome.FAILED, "id_not_found", False),
]
CODE_CASES = [
    (failure("400"), CheckOutcome.UNAVAILABLE, "provider_bad_request"),
    (failure("401"), CheckOutcome.FAILED, "invalid_identity"),
    (failure("402"), CheckOutcome.UNAVAILABLE, "registry_unavailable"),
    (failure("403"), CheckOutcome.UNAVAILABLE, "registry_quota_exceeded"),
    (failure("405"), CheckOutcome.UNAVAILABLE, "registry_bad_response"),
    (failure("410"), CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    (failure("411"), CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    (failure("412"), CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    (failure("500"), CheckOutcome.UNAVAILABLE, "registry_unavailable"),
    (failure("SignatureDoesNotMatch", 400), CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    (failure("InvalidAccessKeyId.NotFound", 404), CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    (failure("InvalidTimeStamp.Expired", 400), CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    (failure("Forbidden.RAM", 403), CheckOutcome.UNAVAILABLE, "provider_auth_failed"),
    (failure("Throttling.User", 400), CheckOutcome.UNAVAILABLE, "registry_rate_limited"),
    (failure("InternalError", 500), CheckOutcome.UNAVAILABLE, "registry_unavailable"),
    (failure("UnknownError", 400), CheckOutcome.UNAVAILABLE, "registry_bad_response"),
    (failure("MissingParameter", 400), CheckOutcome.UNAVAILABLE, "provider_bad_request"),
    (failure("InvalidParameter.Format", 400), CheckOutcome.UNAVAILABLE, "provider_bad_request"),
    (verdict("4"), CheckOutcome.UNAVAILABLE, "registry_bad_response"),
    (verdict(None), CheckOutcome.UNAVAILABLE, "registry_bad_response"),
    (httpx.Response(200, json={"Code": "200"}), CheckOutcome.UNAVAILABLE, "registry_bad_response"),
    (httpx.Response(200, json={"BizCode": "1"}), CheckOutcome.UNAVAILABLE, "registry_bad_response"),
]


@pytest.mark.parametrize(("biz_code", "outcome", "reason", "billable"), BIZ_CASES)
async def test_id2meta_biz_code_maps_to_documented_check_result(
    connect: Connect, biz_code: str, outcome: CheckOutcome, reason: str | None, billable: bool
) -> None:
    """Each documented Id2MetaVerify BizCode gives its CheckResult and billing flag."""
    verifier = build_verifier(AliyunId2MetaVerifier, connect(id_fake(verdict(biz_code))))

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert summary(checked) == (outcome, reason, billable)
    assert checked.provider_reference == REQUEST_ID.lower()


@pytest.mark.parametrize(("biz_code", "outcome", "reason", "billable"), MOBILE_BIZ_CASES)
async def test_mobile3meta_biz_code_maps_to_documented_check_result(
    connect: Connect, biz_code: str, outcome: CheckOutcome, reason: str | None, billable: bool
) -> None:
    """Each documented Mobile3MetaSimpleVerify BizCode gives its CheckResult and billing flag."""
    fake = mobile_fake(verdict(biz_code, IspName="CMCC"))

    checked = await build_verifier(AliyunMobile3MetaVerifier, connect(fake)).check(
        SUBJECT, attempt_key="a-1"
    )

    assert summary(checked) == (outcome, reason, billable)


async def test_numeric_codes_are_accepted(connect: Connect) -> None:
    """Code and BizCode given as JSON numbers (as in the documented example) are understood."""
    verifier = build_verifier(AliyunId2MetaVerifier, connect(id_fake(verdict(1, code=200))))

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert summary(checked) == (CheckOutcome.PASSED, None, True)


@pytest.mark.parametrize(("reply", "outcome", "reason"), CODE_CASES)
async def test_error_code_maps_to_unbilled_result(
    connect: Connect, reply: httpx.Response, outcome: CheckOutcome, reason: str
) -> None:
    """Error codes and undocumented answers map as documented, unbilled, never passed."""
    verifier = build_verifier(AliyunId2MetaVerifier, connect(id_fake(reply)))

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert summary(checked) == (outcome, reason, False)


async def test_mobile3meta_unsupported_number_range(connect: Connect) -> None:
    """Mobile3MetaSimpleVerify Code 405 is unavailable/phone_unsupported."""
    verifier = build_verifier(AliyunMobile3MetaVerifier, connect(mobile_fake(failure("405"))))

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert summary(checked) == (CheckOutcome.UNAVAILABLE, "phone_unsupported", False)


async def test_id2meta_sends_plain_fields_in_the_form_body(connect: Connect) -> None:
    """Id2MetaVerify sends ParamType normal with name and ID number in the body only."""
    fake = id_fake(verdict("1"))

    await build_verifier(AliyunId2MetaVerifier, connect(fake)).check(SUBJECT, attempt_key="a-1")

    assert fake.form() == {
        "ParamType": "normal",
        "IdentifyNum": SUBJECT.id_number,
        "UserName": SUBJECT.real_name,
    }


async def test_mobile3meta_sends_md5_of_every_field_by_default(connect: Connect) -> None:
    """Mobile3MetaSimpleVerify sends ParamType md5 and the lowercase MD5 of each field."""
    fake = mobile_fake(verdict("1"))

    await build_verifier(AliyunMobile3MetaVerifier, connect(fake)).check(SUBJECT, attempt_key="a-1")

    assert fake.form() == {
        "ParamType": "md5",
        "IdentifyNum": md5(SUBJECT.id_number),
        "UserName": md5(SUBJECT.real_name),
        "Mobile": md5(NATIONAL_PHONE),
    }


async def test_mobile3meta_plain_mode_sends_national_number(connect: Connect) -> None:
    """With param_type normal the fields are plain, the phone as 11 national digits."""
    fake = mobile_fake(verdict("1"))

    await build_verifier(AliyunMobile3MetaVerifier, connect(fake), param_type="normal").check(
        SUBJECT, attempt_key="a-1"
    )

    assert fake.form()["Mobile"] == NATIONAL_PHONE
    assert fake.form()["ParamType"] == "normal"


async def test_non_mainland_phone_is_not_sent(connect: Connect) -> None:
    """A phone outside mainland China is unavailable/phone_unsupported without a request."""
    fake = mobile_fake(verdict("1"))
    subject = Subject(SUBJECT.real_name, SUBJECT.id_number, "+85291234567")

    checked = await build_verifier(AliyunMobile3MetaVerifier, connect(fake)).check(
        subject, attempt_key="a-1"
    )

    assert checked == CheckResult.unavailable("phone_unsupported")
    assert fake.requests == []


async def test_regional_endpoint_is_chosen_by_region(connect: Connect) -> None:
    """Region cn-shanghai calls cloudauth.cn-shanghai.aliyuncs.com."""
    fake = FakeAliyun(
        "cloudauth.cn-shanghai.aliyuncs.com", "Id2MetaVerify", "2019-03-07", [verdict("1")]
    )
    verifier = build_verifier(AliyunId2MetaVerifier, connect(fake), region="cn-shanghai")

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert checked.outcome is CheckOutcome.PASSED


async def test_transport_failures_are_retried_then_answer_counts(connect: Connect) -> None:
    """A timeout and a 503 are retried with back-off; the third answer is used."""
    fake = id_fake(httpx.ReadTimeout("slow"), httpx.Response(503), verdict("1"))
    sleep = FakeSleep()

    checked = await build_verifier(AliyunId2MetaVerifier, connect(fake), sleep=sleep).check(
        SUBJECT, attempt_key="a-1"
    )

    assert checked.outcome is CheckOutcome.PASSED
    assert (len(fake.requests), len(sleep.delays)) == (3, 2)


async def test_breaker_counts_bad_responses(connect: Connect) -> None:
    """Undocumented answers open the breaker; then nothing is sent."""
    fake = id_fake(httpx.Response(200, text="<html>"))
    breaker = CircuitBreaker(failure_threshold=2)
    verifier = build_verifier(AliyunId2MetaVerifier, connect(fake), breaker=breaker)

    reasons = [(await verifier.check(SUBJECT, attempt_key="a-1")).reason for _ in range(3)]

    assert reasons == ["registry_bad_response", "registry_bad_response", "circuit_open"]
    assert len(fake.requests) == 2


@pytest.mark.parametrize("code", ["MissingParameter", "InvalidParameter"])
async def test_malformed_request_is_neither_retried_nor_a_breaker_failure(
    connect: Connect, code: str
) -> None:
    """A gateway 400 for our own malformed request is asked once and keeps the breaker closed."""
    fake = id_fake(failure(code, 400))
    breaker = CircuitBreaker(failure_threshold=1)
    verifier = build_verifier(AliyunId2MetaVerifier, connect(fake), breaker=breaker)

    first = await verifier.check(SUBJECT, attempt_key="a-1")
    second = await verifier.check(SUBJECT, attempt_key="a-2")

    assert (first.reason, second.reason) == ("provider_bad_request", "provider_bad_request")
    assert len(fake.requests) == 2
    assert breaker.state.value == "closed"


async def test_cloudauth_security_token_is_sent_and_signed(connect: Connect) -> None:
    """With STS credentials, cloudauth calls carry a signed x-acs-security-token."""
    fake = id_fake(verdict("1"))
    verifier = build_verifier(AliyunId2MetaVerifier, connect(fake), security_token="sts-token-2")

    checked = await verifier.check(SUBJECT, attempt_key="a-1")

    assert checked.outcome is CheckOutcome.PASSED
    assert fake.requests[0].headers["x-acs-security-token"] == "sts-token-2"


async def test_logs_hold_no_personal_data(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing logged during a check contains a subject field or its MD5."""
    caplog.set_level(logging.DEBUG)
    fake = mobile_fake(verdict("2"))

    await build_verifier(AliyunMobile3MetaVerifier, connect(fake)).check(SUBJECT, attempt_key="a-1")

    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert caplog.records
    for value in (*PERSONAL, md5(SUBJECT.id_number), md5(NATIONAL_PHONE)):
        assert value not in logged


async def test_verifier_from_env_names_missing_variables_only(
    idle_client: httpx.AsyncClient,
) -> None:
    """from_env raises ValueError naming the missing variables, never a value."""
    env = {"REALNAME_ALIYUN_ACCESS_KEY_ID": "LTAIvisible"}

    with pytest.raises(ValueError, match="REALNAME_ALIYUN_ACCESS_KEY_SECRET") as caught:
        AliyunId2MetaVerifier.from_env(idle_client, env)

    assert "LTAIvisible" not in str(caught.value)
    assert "REALNAME_ALIYUN_REGION" not in str(caught.value)


async def test_verifier_from_env_defaults_to_central_endpoint(
    idle_client: httpx.AsyncClient,
) -> None:
    """Without REALNAME_ALIYUN_REGION (cn-hangzhou) the central endpoint is used."""
    env = {"REALNAME_ALIYUN_ACCESS_KEY_ID": "LTAIx", "REALNAME_ALIYUN_ACCESS_KEY_SECRET": "s"}

    verifier = AliyunMobile3MetaVerifier.from_env(idle_client, env)

    assert "host='cloudauth.aliyuncs.com'" in repr(verifier)


# --- Contract ----------------------------------------------------------------------------------

VERIFIERS = [AliyunId2MetaVerifier, AliyunMobile3MetaVerifier]
IDENTITY = {
    AliyunId2MetaVerifier: ("aliyun_id2meta", "id_registry"),
    AliyunMobile3MetaVerifier: ("aliyun_mobile3meta", "carrier_3e"),
}
FAKES = {AliyunId2MetaVerifier: id_fake, AliyunMobile3MetaVerifier: mobile_fake}


@pytest.mark.parametrize("cls", VERIFIERS)
async def test_verifier_declares_its_identity(
    idle_client: httpx.AsyncClient, cls: type[AliyunId2MetaVerifier | AliyunMobile3MetaVerifier]
) -> None:
    """Each verifier satisfies the Protocol with its documented name and type, not sandbox."""
    verifier = build_verifier(cls, idle_client)

    assert isinstance(verifier, Verifier)
    assert (verifier.name, verifier.check_type, verifier.sandbox) == (*IDENTITY[cls], False)


@pytest.mark.parametrize("cls", VERIFIERS)
async def test_transport_exception_is_unavailable_never_passed(
    connect: Connect, cls: type[AliyunId2MetaVerifier | AliyunMobile3MetaVerifier]
) -> None:
    """An exception raised by the transport yields unavailable/verifier_error via run_check."""
    fake = FAKES[cls](RuntimeError("transport exploded"))

    result = await run_check(build_verifier(cls, connect(fake)), SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("verifier_error")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("cls", VERIFIERS)
@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, json={}),
        httpx.Response(200, json={"Code": "200", "ResultObject": "1"}),
        httpx.Response(200, json={"Code": True, "ResultObject": {"BizCode": "1"}}),
        httpx.Response(200, content=b"\xff\xfe"),
    ],
)
async def test_garbage_answer_never_passes(
    connect: Connect,
    cls: type[AliyunId2MetaVerifier | AliyunMobile3MetaVerifier],
    reply: httpx.Response,
) -> None:
    """Whatever a broken provider answers, the check is unavailable, never passed."""
    result = await build_verifier(cls, connect(FAKES[cls](reply))).check(SUBJECT, attempt_key="a-1")

    assert result == CheckResult.unavailable("registry_bad_response")


# --- SMS sender --------------------------------------------------------------------------------


def sms_answer(code: str, biz_id: str = "900619746936498440^0") -> httpx.Response:
    """A documented SendSms answer."""
    body = {"Code": code, "Message": "OK", "BizId": biz_id, "RequestId": REQUEST_ID}
    return httpx.Response(200, json=body)


SMS_CASES = [
    (sms_answer("isv.BUSINESS_LIMIT_CONTROL"), False, "provider_rate_limited"),
    (sms_answer("isv.DAY_LIMIT_CONTROL"), False, "provider_quota_exceeded"),
    (sms_answer("isv.AMOUNT_NOT_ENOUGH"), False, "provider_quota_exceeded"),
    (sms_answer("isv.OUT_OF_SERVICE"), False, "provider_quota_exceeded"),
    (sms_answer("isv.MOBILE_NUMBER_ILLEGAL"), False, "invalid_recipient"),
    (sms_answer("isv.BLACK_KEY_CONTROL_LIMIT"), False, "invalid_recipient"),
    (sms_answer("isv.SMS_TEMPLATE_ILLEGAL"), False, "provider_rejected"),
    (sms_answer("isv.SMS_SIGNATURE_ILLEGAL"), False, "provider_rejected"),
    (sms_answer("isp.RAM_PERMISSION_DENY"), False, "provider_auth_failed"),
    (sms_answer("isv.ACCOUNT_ABNORMAL"), False, "provider_auth_failed"),
    (sms_answer("isp.SYSTEM_ERROR"), True, "provider_unavailable"),
    (failure("SignatureDoesNotMatch", 400), False, "provider_auth_failed"),
    (failure("InvalidAccessKeyId.NotFound", 404), False, "provider_auth_failed"),
    (failure("Throttling.User", 400), True, "provider_throttled"),
    (failure("InternalError", 500), True, "provider_unavailable"),
    (httpx.Response(200, json={"Message": "no code"}), True, "provider_bad_response"),
    (httpx.Response(200, text="oops"), True, "provider_bad_response"),
    (httpx.ConnectError("refused"), True, "provider_unavailable"),
    (httpx.ConnectTimeout("slow"), True, "timeout"),
    (httpx.ReadTimeout("slow"), False, "delivery_unknown"),
    (httpx.RemoteProtocolError("cut"), False, "delivery_unknown"),
]


async def test_sms_request_is_documented_send_sms(connect: Connect) -> None:
    """SendSms carries the national number, sign, template, {"code"} and OutId in the query."""
    fake = sms_fake(sms_answer("OK"))

    await build_sender(connect(fake)).send(MESSAGE)

    assert fake.form() == {
        "PhoneNumbers": NATIONAL_PHONE,
        "SignName": "测试签名",
        "TemplateCode": "SMS_154950909",
        "TemplateParam": json.dumps({"code": CODE}, separators=(",", ":")),
        "OutId": MESSAGE.message_id,
    }


async def test_sms_request_has_the_official_sdk_shape(connect: Connect) -> None:
    """As send_sms_with_options: POST / with exactly the five parameters in the query, no body."""
    fake = sms_fake(sms_answer("OK"))

    await build_sender(connect(fake)).send(MESSAGE)

    sent = fake.requests[0]
    assert (sent.method, sent.url.path, sent.content) == ("POST", "/", b"")
    assert sorted(k for k, _ in sent.url.params.multi_items()) == [
        "OutId",
        "PhoneNumbers",
        "SignName",
        "TemplateCode",
        "TemplateParam",
    ]
    assert "content-type" not in sent.headers


async def test_sms_security_token_is_sent_and_signed(connect: Connect) -> None:
    """With STS credentials, x-acs-security-token is sent and among the signed headers."""
    fake = sms_fake(sms_answer("OK"))
    sender = AliyunSmsSender(
        connect(fake),
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        sign_name="测试签名",
        template_code="SMS_154950909",
        security_token="sts-token-1",
        clock=lambda: NOW,
    )

    await sender.send(MESSAGE)

    sent = fake.requests[0]
    assert sent.headers["x-acs-security-token"] == "sts-token-1"
    assert "x-acs-security-token" in sent.headers["authorization"]


async def test_sms_international_number_drops_the_plus(connect: Connect) -> None:
    """An international number is sent as country code + number without "+"."""
    fake = sms_fake(sms_answer("OK"))
    message = OutgoingSms("job-1", "+85291234567", "otp", {"code": CODE}, body="")

    await build_sender(connect(fake)).send(message)

    assert fake.form()["PhoneNumbers"] == "85291234567"


async def test_sms_non_e164_phone_is_not_sent(connect: Connect) -> None:
    """A phone that is not E.164 is invalid_recipient without a request."""
    fake = sms_fake(sms_answer("OK"))
    message = OutgoingSms("job-1", "13912345678", "otp", {"code": CODE}, body="")

    result = await build_sender(connect(fake)).send(message)

    assert result == SendResult(delivered=False, retriable=False, reason="invalid_recipient")
    assert fake.requests == []


async def test_sms_ok_is_delivered_with_biz_id(connect: Connect) -> None:
    """Code OK is delivered, with the BizId as provider reference."""
    result = await build_sender(connect(sms_fake(sms_answer("OK")))).send(MESSAGE)

    assert result == SendResult(delivered=True, provider_reference="900619746936498440^0")


async def test_sms_biz_id_echoing_the_phone_is_dropped(connect: Connect) -> None:
    """A BizId that contains the recipient's digits is not kept as a reference."""
    reply = sms_answer("OK", biz_id=f"id-{NATIONAL_PHONE}")

    result = await build_sender(connect(sms_fake(reply))).send(MESSAGE)

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

    await build_sender(connect(sms_fake(sms_answer("isv.BUSINESS_LIMIT_CONTROL")))).send(MESSAGE)

    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    for value in PERSONAL:
        assert value not in logged


async def test_sms_sender_satisfies_protocol(idle_client: httpx.AsyncClient) -> None:
    """AliyunSmsSender is a live Sender named aliyun_sms."""
    sender = build_sender(idle_client)

    assert isinstance(sender, Sender)
    assert (sender.name, sender.sandbox) == ("aliyun_sms", False)


async def test_sms_from_env_names_missing_variables_only(idle_client: httpx.AsyncClient) -> None:
    """from_env names every missing SMS variable and no value."""
    env = {
        "REALNAME_ALIYUN_ACCESS_KEY_ID": "LTAIvisible",
        "REALNAME_ALIYUN_ACCESS_KEY_SECRET": "s3cr3t-visible",
        "REALNAME_ALIYUN_SMS_SIGN_NAME": "",
    }

    with pytest.raises(ValueError, match="REALNAME_ALIYUN_SMS_SIGN_NAME") as caught:
        AliyunSmsSender.from_env(idle_client, env)

    message = str(caught.value)
    assert "REALNAME_ALIYUN_SMS_TEMPLATE_CODE" in message
    assert "visible" not in message
