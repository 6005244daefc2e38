"""How the cloud SMS senders call their provider behind a circuit breaker and turn its answer
into a :class:`SendResult`, and log it (message id, reason and provider code only; never the
phone, body or code)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from app.providers import ProviderResponseError, ProviderTransportError, screened_reference
from app.providers.breaker import CircuitBreaker, call_through
from app.senders.base import DELIVERY_UNKNOWN, OutgoingSms, SendResult

#: Send reasons that say the provider is not working (no answer, or a garbled one): these, and
#: exceptions, count against the sender's circuit breaker. Refusals (limits, bad recipients,
#: credentials) come from a working provider and do not.
UPSTREAM_FAILURES: Final = frozenset(
    {"timeout", "provider_unavailable", "provider_bad_response", DELIVERY_UNKNOWN}
)


class SmsOutcomes:
    """The shared mapping for one provider's sender (``label`` names it in log lines)."""

    def __init__(self, logger: logging.Logger, label: str) -> None:
        self._logger = logger
        self._label = label

    async def send(
        self,
        breaker: CircuitBreaker,
        message: OutgoingSms,
        call: Callable[[], Awaitable[dict[str, Any]]],
        answer: Callable[[OutgoingSms, dict[str, Any]], SendResult],
    ) -> SendResult:
        """Make the provider ``call`` for ``message`` behind ``breaker`` and map what comes back
        with ``answer``; while the breaker is open, a retriable ``circuit_open`` without a call.
        """

        async def attempt() -> SendResult:
            try:
                body = await call()
            except ProviderTransportError as exc:
                return self.transport_failed(message, exc)
            except ProviderResponseError:
                return self.bad_response(message)
            return answer(message, body)

        result = await call_through(breaker, attempt, lambda r: r.reason in UPSTREAM_FAILURES)
        if result is None:
            return self.failed(message, None, "circuit_open", retriable=True)
        return result

    def failed(
        self, message: OutgoingSms, code: str | None, reason: str, *, retriable: bool
    ) -> SendResult:
        self._logger.log(
            logging.INFO if retriable else logging.WARNING,
            f"{self._label} send failed",
            extra={"message_id": message.message_id, "reason": reason, "provider_code": code},
        )
        return SendResult(delivered=False, retriable=retriable, reason=reason)

    def transport_failed(self, message: OutgoingSms, exc: ProviderTransportError) -> SendResult:
        """No answer. SendSms is not idempotent at either provider (no de-duplication key): a
        request that may have reached the provider is ``delivery_unknown`` and never resent
        blindly (a resend could deliver twice, or be refused as a per-number rate limit although
        the first message arrived); the user asks for a new code instead."""
        if exc.reached:
            return self.failed(message, None, DELIVERY_UNKNOWN, retriable=False)
        reason = "timeout" if exc.reason == "timeout" else "provider_unavailable"
        return self.failed(message, None, reason, retriable=True)

    def bad_response(self, message: OutgoingSms) -> SendResult:
        # Retried: a duplicate code does less harm than a missing one.
        return self.failed(message, None, "provider_bad_response", retriable=True)

    def accepted(self, message: OutgoingSms, code: str, reference: object) -> SendResult:
        """Delivered; the provider's reference is kept only if it echoes no phone digits or
        message parameter (a provider that echoes personal data must not get it stored)."""
        digits = "".join(c for c in message.phone if c.isdigit())
        kept = screened_reference(reference, forbidden=[digits[-8:], *message.params.values()])
        self._logger.info(
            f"{self._label} accepted the message",
            extra={"message_id": message.message_id, "provider_code": code},
        )
        return SendResult(delivered=True, provider_reference=kept)
