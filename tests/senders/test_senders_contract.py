"""The sender contract (app.senders.base), checked against every registered sender.

The suite is parametrised over the registry (``app.senders.registry``): each sender is built by
its registry factory in front of a stand-in provider (``tests/plugin_worlds.py``) that accepts
the message, refuses it for good, fails for now or does not answer. A registered sender that the
worlds cannot build fails the suite.
"""

from __future__ import annotations

import logging
import re
import traceback

import pytest

from app.senders.base import Sender, SendResult
from app.senders.registry import BUILTIN
from tests.plugin_worlds import (
    MESSAGE,
    PERSONAL,
    SENDER_SCENARIOS,
    SENDER_WORLDS,
    SenderWorld,
    scenario_cases,
    world_of,
)
from tests.plugin_worlds import rendered as rendered_values

#: Every sender the registry knows: the suite's parameters.
REGISTERED = sorted(BUILTIN)
#: (name, scenario) for every registered sender and every scenario its world plays.
SCENARIO_CASES = scenario_cases(SENDER_WORLDS, REGISTERED)


def world(name: str) -> SenderWorld:
    return world_of(SENDER_WORLDS, name)


def test_every_registered_sender_has_a_world() -> None:
    """The contract suite can build exactly the senders the registry knows, no fewer or more."""
    assert set(SENDER_WORLDS) == set(REGISTERED)


def test_the_suite_covers_every_registered_sender() -> None:
    """A sender that sends messages out faces a refusal, a transient failure and a timeout; a
    sandbox sender (nothing leaves the process) at least delivers."""
    for name in REGISTERED:
        expected = ("accepted",) if world(name).sandbox else SENDER_SCENARIOS
        assert set(world(name).scenarios) == set(expected)


@pytest.mark.parametrize("name", REGISTERED)
async def test_sender_declares_its_identity(name: str) -> None:
    """Each registered sender satisfies the Protocol, carries its registry name and declares
    whether messages leave the service."""
    async with world(name).open("accepted") as sender:
        assert isinstance(sender, Sender)
        assert sender.name == name
        assert sender.sandbox is world(name).sandbox


#: The contract's answer to each scenario: (delivered, retriable); None where either is allowed.
CONTRACT: dict[str, tuple[bool, bool | None]] = {
    "accepted": (True, False),
    "refused": (False, False),
    "transient": (False, True),
    # A request that may have reached the provider is not resent blindly (delivery_unknown); one
    # that certainly did not is retried: the contract allows either.
    "timeout": (False, None),
}


@pytest.mark.parametrize(("name", "scenario"), SCENARIO_CASES)
async def test_scenario_gives_the_contract_result(name: str, scenario: str) -> None:
    """An accepted message is delivered; a refusal is final; a transient failure is retried;
    a failure always carries a reason code."""
    async with world(name).open(scenario) as sender:
        result = await sender.send(MESSAGE)

    assert isinstance(result, SendResult)
    delivered, retriable = CONTRACT[scenario]
    assert result.delivered is delivered
    if retriable is not None:
        assert result.retriable is retriable
    if delivered:
        assert result.reason is None
    else:
        assert result.reason is not None
        assert re.fullmatch(r"[a-z][a-z0-9_]{0,63}", result.reason)


@pytest.mark.parametrize(("name", "scenario"), SCENARIO_CASES)
async def test_scenario_leaks_no_personal_data(
    name: str, scenario: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever happens, neither the result, an exception the sender raises, nor anything it
    logs holds the phone number, the code or the body."""
    caplog.set_level(logging.DEBUG)
    async with world(name).open(scenario) as sender:
        try:
            result: object = await sender.send(MESSAGE)
        except Exception as exc:  # the worker retries; the text must still be clean
            result = "".join(traceback.format_exception(exc))

    seen = rendered_values(result, caplog.text, *(record.__dict__ for record in caplog.records))
    for value in PERSONAL:
        assert value not in seen


@pytest.mark.parametrize("name", REGISTERED)
async def test_sending_again_gives_an_equal_result(name: str) -> None:
    """Sending the same message again (the worker's retry) gives an equal result."""
    async with world(name).open("accepted") as sender:
        first = await sender.send(MESSAGE)
        second = await sender.send(MESSAGE)

    assert first == second
