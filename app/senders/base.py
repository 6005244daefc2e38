"""The sender plug-in contract.

A *sender* delivers one SMS. It knows nothing about verifications, checks or codes beyond the
message it is handed; verifiers never send. Sends are driven by the outbox worker
(:class:`app.worker.Worker`, which runs the outbox's ``send_sms`` jobs): it calls
:meth:`Sender.send` at least once per message and relies on ``message_id`` for de-duplication
where the provider supports it.

Contract
--------
Inputs
    An :class:`OutgoingSms`: the E.164 phone, a template name with its parameters (providers
    that require pre-registered templates use these) and the rendered body (providers that
    take free text use that). ``message_id`` is stable across retries of the same message.
Outcomes
    :class:`SendResult` ``delivered=True`` when the provider accepted the message;
    ``delivered=False, retriable=True`` for transient failures (timeouts, 5xx, throttling):
    the worker retries with back-off; ``retriable=False`` for permanent refusals.
Failing closed
    Exceptions are treated by the worker as retriable failures.
What may be stored or logged
    Only the result (reason code, provider reference). Never the phone number, the body or
    the code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    message_id: str
    phone: str
    template: str
    params: Mapping[str, str]
    body: str = field(repr=False)

    def __repr__(self) -> str:
        return f"OutgoingSms(message_id={self.message_id!r}, template={self.template!r})"


#: The reason of a send that may or may not have been delivered: the request reached the provider
#: but no answer came. Not retriable for providers without de-duplication (see the cloud senders).
DELIVERY_UNKNOWN = "delivery_unknown"


@dataclass(frozen=True, slots=True)
class SendResult:
    delivered: bool
    retriable: bool = False
    reason: str | None = None
    provider_reference: str | None = None


@runtime_checkable
class Sender(Protocol):
    """A plug-in that delivers SMS messages. See the module docstring for the contract."""

    name: ClassVar[str]
    #: True when messages never leave this service (sandbox inbox, console).
    sandbox: ClassVar[bool]

    async def send(self, message: OutgoingSms) -> SendResult:
        """Deliver ``message``; see the module docstring for outcomes."""
        ...
