"""The verifier plug-in contract.

A *verifier* performs one *check* of a verification: it is asked whether a person's identity
fields hold up against some authority (an ID registry, a mobile carrier) and answers with a
:class:`CheckResult`. Verifiers never send messages (that is a *sender*'s job, see
``app.senders``), never touch the database and never call back into services.

Contract every verifier honours
-------------------------------
Inputs
    A :class:`Subject` holding the canonical identity fields (NFC name, 18-character resident ID
    number with an uppercase ``X``, E.164 phone) and an ``attempt_key``: an opaque, PII-free
    string that is identical for retries of the same check, so a provider that supports request
    de-duplication can be given it.
Outcomes
    ``passed``: the authority confirmed the fields belong together.
    ``failed`` with a stable ``reason`` code (``id_mismatch``, ``id_not_found``,
    ``invalid_identity``, ``phone_mismatch``, ...): a definite, non-retriable negative answer.
    ``unavailable`` with a reason (``registry_unavailable``, ``registry_quota_exceeded``,
    ``timeout``, ...): no answer could be had; the caller may retry later and must never treat
    it as ``passed``.
Failing closed
    A verifier may raise; the runner (:func:`run_check`) turns any exception into
    ``unavailable`` with reason ``verifier_error``. Nothing a verifier does can produce
    ``passed`` except returning it explicitly.
What may be stored
    Only the :class:`CheckResult`: outcome, reason code, whether the provider bills the call, and
    an optional opaque provider reference (a request id). Never the subject's fields, nor a
    provider response body that could echo them.
Idempotency
    ``check`` may be called more than once with the same ``attempt_key`` (retries after a
    timeout, a worker restart). Verifiers must be safe under that: no local side effects beyond
    counting and logging without personal data.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final, Protocol, runtime_checkable

# The subject is part of this contract; it lives with the identity fields, which seal it.
from app.identity.subject import Subject as Subject

logger = logging.getLogger(__name__)

_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
_REFERENCE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class CheckOutcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a verifier answers. Safe to store and to log: it holds no personal data."""

    outcome: CheckOutcome
    reason: str | None = None
    billable: bool = False
    provider_reference: str | None = None

    @classmethod
    def passed(
        cls, *, billable: bool = False, provider_reference: str | None = None
    ) -> CheckResult:
        return cls(CheckOutcome.PASSED, None, billable, provider_reference)

    @classmethod
    def failed(
        cls, reason: str, *, billable: bool = False, provider_reference: str | None = None
    ) -> CheckResult:
        return cls(CheckOutcome.FAILED, reason, billable, provider_reference)

    @classmethod
    def unavailable(cls, reason: str, *, provider_reference: str | None = None) -> CheckResult:
        return cls(CheckOutcome.UNAVAILABLE, reason, False, provider_reference)


#: Check reasons that say the upstream is not working (as opposed to an answer from a working
#: upstream, even a negative one): these, and exceptions, count against a circuit breaker.
UPSTREAM_FAILURES: Final = frozenset(
    {"registry_unavailable", "registry_maintenance", "registry_bad_response"}
)


def upstream_failed(result: CheckResult) -> bool:
    """Whether ``result`` counts against the verifier's circuit breaker."""
    return result.reason in UPSTREAM_FAILURES


@runtime_checkable
class Verifier(Protocol):
    """A plug-in that performs one kind of check. See the module docstring for the contract."""

    #: Registry name, e.g. ``"mock_id_registry"``; unique among installed verifiers.
    name: ClassVar[str]
    #: The check type it performs: ``"id_registry"`` (name + ID number) or ``"carrier_3e"``
    #: (name + ID number + phone belong together).
    check_type: ClassVar[str]
    #: True for verifiers that never reach a real authority; the only ones test-mode clients use.
    sandbox: ClassVar[bool]

    # Optional: ``inline: ClassVar[bool]``, True for a verifier that answers in process without
    # I/O (the mock registry); when every verifier a registration needs is inline, its checks
    # run in the registration's own transaction (``REALNAME_INLINE_CHECKS``). Absent: False.

    async def check(self, subject: Subject, *, attempt_key: str) -> CheckResult:
        """Check ``subject`` against the authority.

        Args:
            subject: canonical identity fields (see :class:`Subject`).
            attempt_key: PII-free key, identical across retries of the same check.

        Returns:
            The :class:`CheckResult`. Definite negative answers are ``failed`` with a reason;
            anything that is not an answer is ``unavailable``.

        Raises:
            Anything: the runner turns it into ``unavailable`` (``verifier_error``).
        """
        ...


async def run_check(verifier: Verifier, subject: Subject, *, attempt_key: str) -> CheckResult:
    """Run ``verifier`` and fail closed: any exception or malformed answer is ``unavailable``."""
    try:
        # Typed as object: third-party plug-ins are not type-checked with us.
        result: object = await verifier.check(subject, attempt_key=attempt_key)
    except Exception as exc:  # fail closed: a plug-in's error is never a pass
        logger.warning(
            "verifier raised; treating as unavailable",
            extra={"verifier": verifier.name, "error_type": type(exc).__name__},
        )
        return CheckResult.unavailable("verifier_error")
    if not isinstance(result, CheckResult):
        logger.warning("verifier returned a non-CheckResult", extra={"verifier": verifier.name})
        return CheckResult.unavailable("verifier_error")
    # Reasons and references are stored, logged and used as metric labels: a plug-in may not
    # smuggle free text (or personal data) through them.
    if result.reason is not None and not _REASON.fullmatch(result.reason):
        logger.warning("verifier returned a malformed reason", extra={"verifier": verifier.name})
        return CheckResult.unavailable("verifier_error")
    if result.provider_reference is not None and not _REFERENCE.fullmatch(
        result.provider_reference
    ):
        result = CheckResult(result.outcome, result.reason, result.billable, None)
    return result
