"""The verifier contract (app.verifiers.base), checked against every shipped verifier.

The HTTP verifiers are wired to our own standalone mock registry through ASGITransport, so the
same expectations cover the in-process mock, the server and the HTTP adapters end to end.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest

from app.mock_registry_server import create_mock_registry_app
from app.verifiers.base import CheckOutcome, CheckResult, Subject, Verifier, run_check
from app.verifiers.http_registry import HttpCarrierVerifier, HttpIdRegistryVerifier
from app.verifiers.mock_registry import (
    MAGIC_NAMES,
    KnownPerson,
    MockCarrierVerifier,
    MockIdRegistryVerifier,
)

BASE_URL = "http://mock-registry.test"
ID_NUMBER = "11010519491231002X"
PHONE = "+8613800138000"
NORMAL = Subject("张三", ID_NUMBER, PHONE)

# The documented result of each magic name, per check type: (outcome, reason, billable).
EXPECTED: dict[str, dict[str, tuple[CheckOutcome, str | None, bool]]] = {
    "id_registry": {
        "不一致": (CheckOutcome.FAILED, "id_mismatch", True),
        "查无此人": (CheckOutcome.FAILED, "id_not_found", False),
        "信息有误": (CheckOutcome.FAILED, "invalid_identity", False),
        "服务异常": (CheckOutcome.UNAVAILABLE, "registry_unavailable", False),
        "系统维护": (CheckOutcome.UNAVAILABLE, "registry_maintenance", False),
        "超出限额": (CheckOutcome.UNAVAILABLE, "registry_quota_exceeded", False),
        "号码不符": (CheckOutcome.PASSED, None, True),
    },
    "carrier_3e": {
        "不一致": (CheckOutcome.FAILED, "id_mismatch", True),
        "查无此人": (CheckOutcome.FAILED, "id_not_found", False),
        "信息有误": (CheckOutcome.FAILED, "invalid_identity", False),
        "服务异常": (CheckOutcome.UNAVAILABLE, "registry_unavailable", False),
        "系统维护": (CheckOutcome.UNAVAILABLE, "registry_maintenance", False),
        "超出限额": (CheckOutcome.UNAVAILABLE, "registry_quota_exceeded", False),
        "号码不符": (CheckOutcome.FAILED, "phone_mismatch", True),
    },
}

# name -> (check_type, sandbox) as documented for each verifier.
IDENTITY = {
    "mock_id_registry": ("id_registry", True),
    "mock_carrier_3e": ("carrier_3e", True),
    "http_id_registry": ("id_registry", False),
    "http_carrier_3e": ("carrier_3e", False),
}


async def _no_sleep(_seconds: float) -> None:
    """Back-off delays are irrelevant to the contract."""


VerifierFactory = Callable[[], AbstractAsyncContextManager[Verifier]]


@asynccontextmanager
async def _mock_id_registry() -> AsyncIterator[Verifier]:
    yield MockIdRegistryVerifier()


@asynccontextmanager
async def _mock_carrier() -> AsyncIterator[Verifier]:
    yield MockCarrierVerifier()


def _http_factory(
    cls: type[HttpIdRegistryVerifier | HttpCarrierVerifier],
) -> VerifierFactory:
    @asynccontextmanager
    async def factory() -> AsyncIterator[Verifier]:
        transport = httpx.ASGITransport(app=create_mock_registry_app())
        async with httpx.AsyncClient(transport=transport) as client:
            yield cls(client, BASE_URL, sleep=_no_sleep)

    return factory


FACTORIES: dict[str, VerifierFactory] = {
    "mock_id_registry": _mock_id_registry,
    "mock_carrier_3e": _mock_carrier,
    "http_id_registry": _http_factory(HttpIdRegistryVerifier),
    "http_carrier_3e": _http_factory(HttpCarrierVerifier),
}


@pytest.fixture(params=list(FACTORIES), ids=list(FACTORIES))
async def verifier(request: pytest.FixtureRequest) -> AsyncIterator[Verifier]:
    """Each shipped verifier in turn."""
    async with FACTORIES[request.param]() as built:
        yield built


class _ExplodingPeople(Mapping[str, KnownPerson]):
    """A known-people table whose every lookup fails, to break the mock from inside."""

    def __getitem__(self, key: str) -> KnownPerson:
        raise RuntimeError("fixture store exploded")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("fixture store exploded")

    def __len__(self) -> int:
        raise RuntimeError("fixture store exploded")


def _exploding_transport(request: httpx.Request) -> httpx.Response:
    raise RuntimeError("transport exploded")


@asynccontextmanager
async def _broken_http(
    cls: type[HttpIdRegistryVerifier | HttpCarrierVerifier],
) -> AsyncIterator[Verifier]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(_exploding_transport)) as client:
        yield cls(client, BASE_URL, sleep=_no_sleep)


@asynccontextmanager
async def _nullcontext(value: Verifier) -> AsyncIterator[Verifier]:
    yield value


BROKEN: dict[str, VerifierFactory] = {
    "mock_id_registry": lambda: _nullcontext(MockIdRegistryVerifier(people=_ExplodingPeople())),
    "mock_carrier_3e": lambda: _nullcontext(MockCarrierVerifier(people=_ExplodingPeople())),
    "http_id_registry": lambda: _broken_http(HttpIdRegistryVerifier),
    "http_carrier_3e": lambda: _broken_http(HttpCarrierVerifier),
}


def _summary(result: CheckResult) -> tuple[CheckOutcome, str | None, bool]:
    return result.outcome, result.reason, result.billable


async def test_verifier_declares_its_identity(verifier: Verifier) -> None:
    """Each verifier satisfies the Protocol and declares its documented type and sandbox flag."""
    assert isinstance(verifier, Verifier)
    assert (verifier.check_type, verifier.sandbox) == IDENTITY[verifier.name]


async def test_normal_identity_passes(verifier: Verifier) -> None:
    """A well-formed identity with an ordinary name passes, billed."""
    result = await run_check(verifier, NORMAL, attempt_key="attempt-normal")

    assert _summary(result) == (CheckOutcome.PASSED, None, True)


def test_expected_table_covers_every_magic_name() -> None:
    """Every documented magic name has an expected result here, for both check types."""
    for expected in EXPECTED.values():
        assert set(expected) == set(MAGIC_NAMES)


@pytest.mark.parametrize("magic_name", list(MAGIC_NAMES))
async def test_magic_name_gives_documented_result(verifier: Verifier, magic_name: str) -> None:
    """Each magic name yields the CheckResult documented for the verifier's check type."""
    subject = Subject(magic_name, ID_NUMBER, PHONE)

    result = await run_check(verifier, subject, attempt_key="attempt-magic")

    assert _summary(result) == EXPECTED[verifier.check_type][magic_name]


@pytest.mark.parametrize("kind", list(BROKEN))
async def test_broken_verifier_is_unavailable_never_passed(kind: str) -> None:
    """A verifier that raises inside yields unavailable/verifier_error through run_check."""
    async with BROKEN[kind]() as broken:
        result = await run_check(broken, NORMAL, attempt_key="attempt-broken")

    assert result == CheckResult.unavailable("verifier_error")


@pytest.mark.parametrize("name", ["张三", *MAGIC_NAMES])
async def test_same_attempt_key_gives_same_result(verifier: Verifier, name: str) -> None:
    """Repeating a check with the same attempt_key gives an equal result."""
    subject = Subject(name, ID_NUMBER, PHONE)

    first = await run_check(verifier, subject, attempt_key="attempt-repeat")
    second = await run_check(verifier, subject, attempt_key="attempt-repeat")

    assert first == second


@pytest.mark.parametrize("name", ["张三", *MAGIC_NAMES])
async def test_result_and_logs_hold_no_personal_data(
    verifier: Verifier, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the result, its str/repr, nor anything logged contains a subject field."""
    subject = Subject(name, ID_NUMBER, PHONE)
    caplog.set_level(logging.DEBUG)

    result = await run_check(verifier, subject, attempt_key="attempt-pii")

    rendered = [str(result), repr(result), result.reason or "", result.provider_reference or ""]
    rendered.append(caplog.text)
    rendered.extend(str(record.__dict__) for record in caplog.records)
    for text in rendered:
        for field in (subject.real_name, subject.id_number, subject.phone, PHONE[3:]):
            assert field not in text


class _Chatty:
    """A plug-in that returns free text where a reason code belongs."""

    name = "chatty"
    check_type = "id_registry"
    sandbox = True

    async def check(self, subject: Subject, *, attempt_key: str) -> CheckResult:
        return CheckResult.failed(f"name {subject.real_name} not found")


async def test_free_text_reasons_are_refused_by_the_runner() -> None:
    """A reason that is not a short code (it could carry personal data) becomes verifier_error."""
    result = await run_check(
        _Chatty(), Subject("张三", "11010519491231002X", "+8613800138000"), attempt_key="k"
    )
    assert (result.outcome.value, result.reason) == ("unavailable", "verifier_error")
