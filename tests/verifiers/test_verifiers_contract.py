"""The verifier contract (app.verifiers.base), checked against every registered verifier.

The suite is parametrised over the registry (``app.verifiers.registry``): each verifier is built
by its registry factory in front of a stand-in provider (``tests/plugin_worlds.py``) and faces a
match, a mismatch, a missing record, an outage, a timeout and a garbled answer. A registered
verifier that the worlds cannot build fails the suite. The verifiers that speak to our own mock
registry (in process, or its server through ASGITransport) are also held to its magic names.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import ClassVar

import httpx
import pytest

from app.verifiers.base import CheckOutcome, CheckResult, Subject, Verifier, run_check
from app.verifiers.http_registry import HttpCarrierVerifier, HttpIdRegistryVerifier
from app.verifiers.mock_registry import (
    MAGIC_NAMES,
    KnownPerson,
    MockCarrierVerifier,
    MockIdRegistryVerifier,
)
from app.verifiers.registry import available_factories
from tests.plugin_worlds import (
    SANDBOX_SCENARIOS,
    VERIFIER_SCENARIOS,
    VERIFIER_WORLDS,
    VerifierWorld,
    rendered,
    scenario_cases,
    world_of,
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


async def _no_sleep(_seconds: float) -> None:
    """Back-off delays are irrelevant to the contract."""


VerifierFactory = Callable[[], AbstractAsyncContextManager[Verifier]]

#: Every verifier the registry knows (built-ins and installed plug-ins): the suite's parameters,
#: so a verifier is held to the contract the moment it is registered.
REGISTERED = sorted(available_factories())
#: The registered verifiers that answer the mock registry's magic names.
MAGIC_SPEAKERS = [n for n in REGISTERED if n in VERIFIER_WORLDS and VERIFIER_WORLDS[n].magic]
#: (name, scenario) for every registered verifier and every scenario its world plays.
SCENARIO_CASES = scenario_cases(VERIFIER_WORLDS, REGISTERED)


def world(name: str) -> VerifierWorld:
    return world_of(VERIFIER_WORLDS, name)


def test_every_registered_verifier_has_a_world() -> None:
    """The contract suite can build exactly the verifiers the registry knows, no fewer or more."""
    assert set(VERIFIER_WORLDS) == set(REGISTERED)


def test_the_suite_covers_every_registered_verifier() -> None:
    """Every registered verifier faces every definite answer, and those that leave the process
    face a timeout and a garbled answer too."""
    for name in REGISTERED:
        scenarios = set(world(name).scenarios)
        assert set(SANDBOX_SCENARIOS) <= scenarios
        if not world(name).sandbox:
            assert scenarios == set(VERIFIER_SCENARIOS)


@pytest.fixture(params=MAGIC_SPEAKERS)
async def verifier(request: pytest.FixtureRequest) -> AsyncIterator[Verifier]:
    """Each registered verifier that answers the mock registry's magic names, in turn."""
    async with world(request.param).open("match") as (built, _subject):
        yield built


@pytest.mark.parametrize("name", REGISTERED)
async def test_verifier_declares_its_identity(name: str) -> None:
    """Each registered verifier satisfies the Protocol, carries its registry name and declares
    its documented check type and sandbox flag."""
    async with world(name).open("match") as (verifier, _subject):
        assert isinstance(verifier, Verifier)
        assert verifier.name == name
        assert (verifier.check_type, verifier.sandbox) == (
            world(name).check_type,
            world(name).sandbox,
        )


#: The contract's answer to each scenario: the outcome, and the reasons it allows.
CONTRACT: dict[str, tuple[CheckOutcome, set[str] | None]] = {
    "match": (CheckOutcome.PASSED, None),
    "mismatch": (CheckOutcome.FAILED, {"id_mismatch", "phone_mismatch"}),
    "no_record": (CheckOutcome.FAILED, {"id_not_found"}),
    "unavailable": (CheckOutcome.UNAVAILABLE, None),
    "timeout": (CheckOutcome.UNAVAILABLE, None),
    "garbled": (CheckOutcome.UNAVAILABLE, None),
}


@pytest.mark.parametrize(("name", "scenario"), SCENARIO_CASES)
async def test_scenario_gives_the_contract_outcome(name: str, scenario: str) -> None:
    """A match passes, a mismatch or a missing record fails with its reason, and anything that
    is not an answer (an outage, a timeout, a garbled body) is unavailable, never passed."""
    async with world(name).open(scenario) as (verifier, subject):
        result = await run_check(verifier, subject, attempt_key=f"attempt-{scenario}")

    outcome, reasons = CONTRACT[scenario]
    assert result.outcome == outcome
    if outcome == CheckOutcome.PASSED:
        assert result.reason is None
    else:
        assert result.reason is not None
        assert re.fullmatch(r"[a-z][a-z0-9_]{0,63}", result.reason)
    if reasons is not None:
        assert result.reason in reasons
    if outcome == CheckOutcome.UNAVAILABLE:
        assert not result.billable


@pytest.mark.parametrize(("name", "scenario"), SCENARIO_CASES)
async def test_scenario_leaks_no_personal_data(
    name: str, scenario: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever happens, neither the result, an exception the verifier raises, nor anything it
    logs holds a subject field."""
    caplog.set_level(logging.DEBUG)
    async with world(name).open(scenario) as (verifier, subject):
        try:
            result: object = await verifier.check(subject, attempt_key=f"attempt-{scenario}")
        except Exception as exc:  # the runner fails closed; the text must still be clean
            result = "".join(traceback.format_exception(exc))

    seen = rendered(result, caplog.text, *(record.__dict__ for record in caplog.records))
    for value in (subject.real_name, subject.id_number, subject.phone, subject.phone[3:]):
        assert value not in seen


@pytest.mark.parametrize(("name", "scenario"), SCENARIO_CASES)
async def test_repeating_an_attempt_gives_an_equal_result(name: str, scenario: str) -> None:
    """The same check twice with the same attempt_key (a retry) gives an equal result."""
    async with world(name).open(scenario) as (verifier, subject):
        first = await run_check(verifier, subject, attempt_key="attempt-repeat")
        second = await run_check(verifier, subject, attempt_key="attempt-repeat")

    assert first == second


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

    name: ClassVar[str] = "chatty"
    check_type: ClassVar[str] = "id_registry"
    sandbox: ClassVar[bool] = True

    async def check(self, subject: Subject, *, attempt_key: str) -> CheckResult:
        return CheckResult.failed(f"name {subject.real_name} not found")


async def test_free_text_reasons_are_refused_by_the_runner() -> None:
    """A reason that is not a short code (it could carry personal data) becomes verifier_error."""
    result = await run_check(
        _Chatty(), Subject("张三", "11010519491231002X", "+8613800138000"), attempt_key="k"
    )
    assert (result.outcome.value, result.reason) == ("unavailable", "verifier_error")
