"""How each registered verifier and sender is built in tests, in front of a stand-in provider.

The contract suites (``tests/verifiers/test_verifiers_contract.py``,
``tests/senders/test_senders_contract.py``) are parametrised over the names in the registries
(``app.verifiers.registry``, ``app.senders.registry``), and every plug-in is built the way the
service builds it: through its registry factory, from settings and environment variables. A
*world* says how: which settings and credentials the factory gets, and which stand-in answers
its HTTP calls for each *scenario* (a match, a mismatch, an outage, a timeout, ...). A registered
name without a world here fails the contract suites.

Only the public plug-in interface is used (registry factories, ``check``/``send``), never an
adapter's private helpers. The stand-ins answer in the providers' documented shapes and check
that no personal value travels in a URL or a header; the provider suites (``tests/providers``)
re-check the request signatures in depth.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
import pytest
from standardwebhooks import Webhook

from app.mock_registry_server import create_mock_registry_app
from app.senders.base import OutgoingSms, Sender
from app.senders.registry import BUILTIN as SENDER_FACTORIES
from app.senders.registry import SenderContext
from app.settings import Settings
from app.verifiers.base import Subject, Verifier
from app.verifiers.registry import FactoryContext, available_factories

REQUEST_ID = "0b5e8a3c-1f4d-4e2a-9c6b-7d8e9f0a1b2c"
REGISTRY_URL = "http://mock-registry.test"
GATEWAY_URL = "https://sms-gateway.test/v1/messages"
GATEWAY_SECRET = "whsec_" + base64.b64encode(b"gateway-secret-0123456789abcdef!").decode()

#: A person of the mock registry's ordinary kind (any name without magic passes there).
SUBJECT = Subject("王小明", "440305199003071236", "+8613912345678")
NATIONAL_PHONE = "13912345678"
CODE = "482913"
MESSAGE = OutgoingSms(
    message_id="job-7f3a",
    phone=SUBJECT.phone,
    template="otp",
    params={"code": CODE, "ttl_minutes": "5"},
    body=f"您的验证码是{CODE}，5分钟内有效。",
)
#: Every spelling of personal data a plug-in could leak.
PERSONAL = (
    SUBJECT.real_name,
    SUBJECT.id_number,
    SUBJECT.phone,
    NATIONAL_PHONE,
    CODE,
    MESSAGE.body,
)

TENCENT_ENV = {
    "REALNAME_TENCENT_SECRET_ID": "AKIDtestTESTtestTESTtestTESTtest0000",
    "REALNAME_TENCENT_SECRET_KEY": "test-secret-key-for-tc3-signing00",
    "REALNAME_TENCENT_SMS_SDK_APP_ID": "1400000000",
    "REALNAME_TENCENT_SMS_SIGN_NAME": "实名认证",
    "REALNAME_TENCENT_SMS_TEMPLATE_ID": "1234567",
}
ALIYUN_ENV = {
    "REALNAME_ALIYUN_ACCESS_KEY_ID": "LTAI5tTestTestTestTest00",
    "REALNAME_ALIYUN_ACCESS_KEY_SECRET": "test-secret-for-acs3-signing-0000",
    "REALNAME_ALIYUN_SMS_SIGN_NAME": "实名认证",
    "REALNAME_ALIYUN_SMS_TEMPLATE_CODE": "SMS_154950909",
}

Handler = Callable[[httpx.Request], httpx.Response]


def settings() -> Settings:
    """What the factories read from settings: the registry and gateway of the stand-ins."""
    return Settings(
        registry_url=REGISTRY_URL,
        sms_gateway_url=GATEWAY_URL,
        sms_gateway_secret=GATEWAY_SECRET,
        _env_file=None,
    )


def assert_nothing_personal(request: httpx.Request, *, in_url: bool = True) -> None:
    """No personal value, plain or percent-encoded, in a header (or in the URL)."""
    exposed = [*request.headers.values(), *([str(request.url)] if in_url else [])]
    for value in PERSONAL:
        for text in exposed:
            assert value not in text
            assert quote(value) not in text


def raising(error: Exception) -> Handler:
    """A provider that cannot be reached: every request raises ``error``."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert_nothing_personal(request, in_url=False)  # see _aliyun_sms
        raise error

    return handler


def answering(host: str, reply: Callable[[httpx.Request], httpx.Response]) -> Handler:
    """A provider at ``host`` that checks each request, then answers with ``reply``."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == host
        assert request.method == "POST"
        assert "authorization" in request.headers
        assert_nothing_personal(request)
        return reply(request)

    return handler


def garbled(request: httpx.Request) -> httpx.Response:
    """An answer in no documented shape (a captive portal, a misrouted proxy)."""
    return httpx.Response(200, text="<html>gateway</html>")


def tencent(**fields: Any) -> Callable[[httpx.Request], httpx.Response]:
    """A documented Tencent Cloud API 3.0 answer ``{"Response": {...}}``."""
    return lambda request: httpx.Response(
        200, json={"Response": {**fields, "RequestId": REQUEST_ID}}
    )


def aliyun(**fields: Any) -> Callable[[httpx.Request], httpx.Response]:
    """A documented Alibaba Cloud RPC answer."""
    return lambda request: httpx.Response(200, json={"RequestId": REQUEST_ID, **fields})


# --- verifiers ---------------------------------------------------------------------------------

#: What a verifier is asked to face. Definite answers first, then the ones that are not answers.
VERIFIER_SCENARIOS = ("match", "mismatch", "no_record", "unavailable", "timeout", "garbled")
#: What a verifier that never leaves the process (a sandbox) is held to: it has no transport to
#: time out or to garble.
SANDBOX_SCENARIOS = VERIFIER_SCENARIOS[:4]

OpenVerifier = Callable[[str], AbstractAsyncContextManager[tuple[Verifier, Subject]]]


@dataclass(frozen=True)
class VerifierWorld:
    """How one registered verifier is built in tests."""

    check_type: str
    sandbox: bool
    #: ``open(scenario)`` builds the verifier through its registry factory, in front of a
    #: stand-in playing ``scenario``, and yields it with the subject to check.
    open: OpenVerifier
    #: True for verifiers that answer the mock registry's magic names (see ``MAGIC_NAMES``).
    magic: bool = False
    scenarios: tuple[str, ...] = field(default=VERIFIER_SCENARIOS)


@asynccontextmanager
async def registered_verifier(
    name: str, handler: Handler | httpx.AsyncBaseTransport, environ: Mapping[str, str] | None = None
) -> AsyncIterator[Verifier]:
    """The verifier ``name`` as its registry factory builds it, over ``handler``."""
    transport = (
        handler if isinstance(handler, httpx.AsyncBaseTransport) else httpx.MockTransport(handler)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        ctx = FactoryContext(settings=settings(), http_client=client, environ=dict(environ or {}))
        yield available_factories()[name](ctx)


#: The mock registry's magic names per scenario and check type (its documented behaviour).
MAGIC = {
    "match": {"id_registry": "张三", "carrier_3e": "张三"},
    "mismatch": {"id_registry": "不一致", "carrier_3e": "号码不符"},
    "no_record": {"id_registry": "查无此人", "carrier_3e": "查无此人"},
    "unavailable": {"id_registry": "服务异常", "carrier_3e": "服务异常"},
}


def _magic_subject(scenario: str, check_type: str) -> Subject:
    return Subject(MAGIC[scenario][check_type], "11010519491231002X", "+8613800138000")


def _sandbox_world(name: str, check_type: str) -> VerifierWorld:
    @asynccontextmanager
    async def open_(scenario: str) -> AsyncIterator[tuple[Verifier, Subject]]:
        async with registered_verifier(name, raising(AssertionError("no call expected"))) as v:
            yield v, _magic_subject(scenario, check_type)

    return VerifierWorld(check_type, True, open_, magic=True, scenarios=SANDBOX_SCENARIOS)


def _http_world(name: str, check_type: str) -> VerifierWorld:
    """The HTTP registry adapters, against our own standalone mock registry (in process)."""

    @asynccontextmanager
    async def open_(scenario: str) -> AsyncIterator[tuple[Verifier, Subject]]:
        transport: Handler | httpx.AsyncBaseTransport
        if scenario == "timeout":
            transport = raising(httpx.ConnectTimeout("no answer"))
        elif scenario == "garbled":
            transport = garbled
        else:
            transport = httpx.ASGITransport(app=create_mock_registry_app())
        subject = _magic_subject(scenario if scenario in MAGIC else "match", check_type)
        async with registered_verifier(name, transport) as verifier:
            yield verifier, subject

    return VerifierWorld(check_type, False, open_, magic=True)


def _provider_world(
    name: str,
    check_type: str,
    host: str,
    environ: Mapping[str, str],
    replies: Mapping[str, Callable[[httpx.Request], httpx.Response]],
) -> VerifierWorld:
    """A cloud provider's adapter, against a stand-in answering ``replies[scenario]``."""

    @asynccontextmanager
    async def open_(scenario: str) -> AsyncIterator[tuple[Verifier, Subject]]:
        if scenario == "timeout":
            handler = raising(httpx.ConnectTimeout("no answer"))
        elif scenario == "garbled":
            handler = answering(host, garbled)
        else:
            handler = answering(host, replies[scenario])
        async with registered_verifier(name, handler, environ) as verifier:
            yield verifier, SUBJECT

    return VerifierWorld(check_type, False, open_)


def _cloudauth(biz_code: str) -> Callable[[httpx.Request], httpx.Response]:
    return aliyun(Code="200", Message="success", ResultObject={"BizCode": biz_code})


VERIFIER_WORLDS: dict[str, VerifierWorld] = {
    "mock_id_registry": _sandbox_world("mock_id_registry", "id_registry"),
    "mock_carrier_3e": _sandbox_world("mock_carrier_3e", "carrier_3e"),
    "http_id_registry": _http_world("http_id_registry", "id_registry"),
    "http_carrier_3e": _http_world("http_carrier_3e", "carrier_3e"),
    "tencent_faceid_id2": _provider_world(
        "tencent_faceid_id2",
        "id_registry",
        "faceid.tencentcloudapi.com",
        TENCENT_ENV,
        {
            "match": tencent(Result="0", Description="一致"),
            "mismatch": tencent(Result="-1", Description="不一致"),
            "no_record": tencent(Result="-5", Description="无记录"),
            "unavailable": tencent(Result="-4", Description="服务异常"),
        },
    ),
    "tencent_faceid_phone3": _provider_world(
        "tencent_faceid_phone3",
        "carrier_3e",
        "faceid.tencentcloudapi.com",
        TENCENT_ENV,
        {
            "match": tencent(Result="0", Description="认证通过"),
            "mismatch": tencent(Result="-4", Description="信息不一致"),
            "no_record": tencent(Result="-9", Description="没有记录"),
            "unavailable": tencent(Result="-11", Description="验证中心服务繁忙"),
        },
    ),
    "aliyun_id2meta": _provider_world(
        "aliyun_id2meta",
        "id_registry",
        "cloudauth.aliyuncs.com",
        ALIYUN_ENV,
        {
            "match": _cloudauth("1"),
            "mismatch": _cloudauth("2"),
            "no_record": _cloudauth("3"),
            "unavailable": aliyun(Code="402", Message="authority source error"),
        },
    ),
    "aliyun_mobile3meta": _provider_world(
        "aliyun_mobile3meta",
        "carrier_3e",
        "cloudauth.aliyuncs.com",
        ALIYUN_ENV,
        {
            "match": _cloudauth("1"),
            "mismatch": _cloudauth("2"),
            "no_record": _cloudauth("3"),
            "unavailable": aliyun(Code="500", Message="system error"),
        },
    ),
}


# --- senders -----------------------------------------------------------------------------------

#: What a sender is asked to face: the provider accepts, refuses for good, fails for now, or
#: does not answer.
SENDER_SCENARIOS = ("accepted", "refused", "transient", "timeout")

OpenSender = Callable[[str], AbstractAsyncContextManager[Sender]]


@dataclass(frozen=True)
class SenderWorld:
    """How one registered sender is built in tests."""

    sandbox: bool
    #: ``open(scenario)`` builds the sender through its registry factory, in front of a
    #: stand-in playing ``scenario``.
    open: OpenSender
    #: A sender that never leaves the process has nothing to refuse or time out.
    scenarios: tuple[str, ...] = SENDER_SCENARIOS


@asynccontextmanager
async def registered_sender(
    name: str, handler: Handler, environ: Mapping[str, str] | None = None
) -> AsyncIterator[Sender]:
    """The sender ``name`` as its registry factory builds it, over ``handler``."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        ctx = SenderContext(
            settings=settings(),
            http_client=client,
            sessions=None,  # type: ignore[arg-type]  # only the sandbox inbox uses the database
            environ=dict(environ or {}),
        )
        yield SENDER_FACTORIES[name](ctx)


def _sender_world(
    name: str,
    environ: Mapping[str, str],
    replies: Mapping[str, Handler],
    *,
    sandbox: bool = False,
) -> SenderWorld:
    @asynccontextmanager
    async def open_(scenario: str) -> AsyncIterator[Sender]:
        handler = (
            raising(httpx.ConnectTimeout("no answer"))
            if scenario == "timeout"
            else replies[scenario]
        )
        async with registered_sender(name, handler, environ) as sender:
            yield sender

    scenarios = tuple(s for s in SENDER_SCENARIOS if s in replies or s == "timeout")
    return SenderWorld(sandbox, open_, scenarios=("accepted",) if sandbox else scenarios)


def _gateway(status: int, **kwargs: Any) -> Handler:
    """The SMS gateway: checks the Standard Webhooks signature, then answers ``status``."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == GATEWAY_URL
        assert_nothing_personal(request)
        Webhook(GATEWAY_SECRET).verify(request.content, dict(request.headers))
        return httpx.Response(status, **kwargs)

    return handler


def _tencent_sms(code: str) -> Handler:
    status = {
        "SerialNo": "5000:1045710669157053657849499619",
        "PhoneNumber": SUBJECT.phone,
        "Fee": 1,
        "SessionContext": MESSAGE.message_id,
        "Code": code,
        "Message": "send success" if code == "Ok" else "failed",
        "IsoCode": "CN",
    }
    return answering("sms.tencentcloudapi.com", tencent(SendStatusSet=[status]))


def _aliyun_sms(code: str) -> Handler:
    reply = aliyun(Code=code, Message="OK", BizId="900619746936498440^0")

    def handler(request: httpx.Request) -> httpx.Response:
        # SendSms takes its parameters in the query, as the official client sends them: the
        # stand-in only checks the headers for personal data.
        assert request.url.host == "dysmsapi.aliyuncs.com"
        assert "authorization" in request.headers
        assert_nothing_personal(request, in_url=False)
        return reply(request)

    return handler


SENDER_WORLDS: dict[str, SenderWorld] = {
    "console": _sender_world(
        "console", {}, {"accepted": raising(AssertionError("no call"))}, sandbox=True
    ),
    "http_gateway": _sender_world(
        "http_gateway",
        {},
        {
            "accepted": _gateway(202, json={"id": "gw-7f3a"}),
            "refused": _gateway(400, json={"error": "bad template"}),
            "transient": _gateway(503),
        },
    ),
    "tencent_sms": _sender_world(
        "tencent_sms",
        TENCENT_ENV,
        {
            "accepted": _tencent_sms("Ok"),
            "refused": _tencent_sms("FailedOperation.TemplateIncorrectOrUnapproved"),
            "transient": _tencent_sms("InternalError.SendAndRecvFail"),
        },
    ),
    "aliyun_sms": _sender_world(
        "aliyun_sms",
        ALIYUN_ENV,
        {
            "accepted": _aliyun_sms("OK"),
            "refused": _aliyun_sms("isv.SMS_TEMPLATE_ILLEGAL"),
            "transient": _aliyun_sms("isp.SYSTEM_ERROR"),
        },
    ),
}


class World(Protocol):
    @property
    def scenarios(self) -> tuple[str, ...]: ...


W = TypeVar("W", bound=World)


def world_of(worlds: Mapping[str, W], name: str) -> W:
    """The test world of the registered plug-in ``name``; one without a world fails its test."""
    if name not in worlds:
        pytest.fail(f"{name!r} is registered but tests/plugin_worlds.py cannot build it")
    return worlds[name]


def scenario_cases(worlds: Mapping[str, World], registered: list[str]) -> list[tuple[str, str]]:
    """(name, scenario) for every registered plug-in and every scenario its world plays; a name
    without a world gets one case, which fails."""
    return [
        (name, scenario)
        for name in registered
        for scenario in (worlds[name].scenarios if name in worlds else ("no world",))
    ]


def rendered(*values: object) -> str:
    """Everything a value could show in a log line or a stored column."""
    return json.dumps([str(v) for v in values] + [repr(v) for v in values], ensure_ascii=False)
