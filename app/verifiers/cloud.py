"""The shared body of the verifiers backed by a cloud provider's element checks
(:mod:`app.verifiers.tencent_faceid`, :mod:`app.verifiers.aliyun_cloudauth`).

A :class:`CloudCheck` builds the provider's request from the subject (or refuses a phone the
provider cannot check), asks through the adapter's circuit breaker and retry policy
(:class:`app.providers.base.ProviderAdapter`), and maps the answer with the provider's tables
(:class:`Entry` values in :class:`~app.providers.base.CodeTable` s). Transport failures are
``registry_unavailable``, a body not in the documented shape ``registry_bad_response``; both
count against the breaker (:func:`~app.verifiers.base.upstream_failed`), and while it is open
checks return ``circuit_open`` without a request. Logs carry the verifier, outcome, reason and
provider code only.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Final, NamedTuple

from app.providers import ProviderResponseError, ProviderTransportError
from app.providers.breaker import CircuitBreaker, call_through
from app.verifiers.base import CheckOutcome, CheckResult, Subject, upstream_failed

__all__ = ["BAD_RESPONSE", "CloudCheck", "Entry"]

logger = logging.getLogger(__name__)


class Entry(NamedTuple):
    """One row of a provider's result table: what a code means for the check."""

    outcome: CheckOutcome
    reason: str | None = None
    billable: bool = False

    def result(self, reference: str | None) -> CheckResult:
        if self.outcome is CheckOutcome.PASSED:
            return CheckResult.passed(billable=self.billable, provider_reference=reference)
        assert self.reason is not None
        if self.outcome is CheckOutcome.FAILED:
            return CheckResult.failed(
                self.reason, billable=self.billable, provider_reference=reference
            )
        return CheckResult.unavailable(self.reason, provider_reference=reference)


#: Any code no table knows, and any answer not in the documented shape: fail closed.
BAD_RESPONSE: Final = Entry(CheckOutcome.UNAVAILABLE, "registry_bad_response")


class CloudCheck:
    """The ``check`` of a cloud verifier; a subclass is also a provider adapter.

    Subclasses give ``name``, ``check_type``, ``_label`` (for log lines), :meth:`_request`,
    :meth:`_ask` and :meth:`_map`.
    """

    name: ClassVar[str]
    check_type: ClassVar[str]
    sandbox: ClassVar[bool] = False
    _label: ClassVar[str]
    breaker: CircuitBreaker

    def _request(self, subject: Subject) -> dict[str, str] | None:
        """The provider's parameters for ``subject``; ``None``: the phone cannot be checked."""
        raise NotImplementedError

    async def _ask(self, request: dict[str, str]) -> dict[str, Any]:
        """One signed call with retries (the adapter's ``signed_call``)."""
        raise NotImplementedError

    def _map(self, answer: dict[str, Any]) -> tuple[CheckResult, str | None]:
        """The result of an answer, and the provider code to log."""
        raise NotImplementedError

    async def check(self, subject: Subject, *, attempt_key: str) -> CheckResult:
        """Ask the provider, with retries, back-off and the circuit breaker.

        Args:
            subject: The canonical identity fields; sent in the request body only.
            attempt_key: Not sent (neither provider has a de-duplication parameter).

        Returns:
            The result mapped by the provider's tables, or ``unavailable`` with
            ``phone_unsupported``, ``registry_unavailable``, ``registry_bad_response`` or
            ``circuit_open``.

        Raises:
            httpx.HTTPError: a non-retriable transport problem (a configuration error).
        """
        request = self._request(subject)
        if request is None:
            return CheckResult.unavailable("phone_unsupported")
        answer = await call_through(
            self.breaker, lambda: self._answer(request), lambda a: upstream_failed(a[0])
        )
        if answer is None:
            return CheckResult.unavailable("circuit_open")
        result, code = answer
        logger.info(
            f"{self._label} check finished",
            extra={
                "verifier": self.name,
                "outcome": result.outcome.value,
                "reason": result.reason,
                "provider_code": code,
            },
        )
        return result

    async def _answer(self, request: dict[str, str]) -> tuple[CheckResult, str | None]:
        try:
            answer = await self._ask(request)
        except ProviderTransportError as exc:
            return CheckResult.unavailable("registry_unavailable"), exc.reason
        except ProviderResponseError:
            return BAD_RESPONSE.result(None), None
        return self._map(answer)
