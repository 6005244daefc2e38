"""Verifiers of the national network identity (国家网络身份认证公共服务: 网号 / 网证).

Since 15 July 2025 (Ministry of Public Security and five other departments, Order No. 173) a
user may present a network identity credential instead of their plaintext identity. The user
authorises in the national app; the relying party's app flow hands the platform an opaque result
token. What comes back for it is: the mode of authentication (网证, 网证+口令, 网证+人脸,
网证+口令+人脸), pass or fail, a per-relying-party pseudonymous identifier (网络身份应用标识,
the *app-scoped identifier*: the same person gives the same identifier to this platform and a
different one to every other), and optionally attribute flags such as an age band. No public
server-side API or signing scheme is published, so this module defines the contract and ships a
sandbox verifier and an HTTP adapter for a gateway the operator integrates themselves; it does
not guess a live client.

Contract every network identity verifier honours
------------------------------------------------
Inputs
    A :class:`NetworkCredential`: the opaque result token and the mode the user chose. Its
    ``repr`` is redacted. ``attempt_key`` is PII-free and identical across retries.
Outcomes (:class:`NetworkIdentityResult`)
    ``passed`` with the app-scoped identifier, the mode actually performed and, when released,
    the age band; ``failed`` with a reason (``network_identity_failed``, ``credential_expired``,
    ``credential_invalid``): a definite answer; ``unavailable`` with a reason: no answer could
    be had, retry later, never treated as passed.
Failing closed
    :func:`run_network_check` turns any exception or malformed answer into ``unavailable``
    (``verifier_error``); a ``passed`` without an app-scoped identifier is malformed.
What may be stored
    Never the token nor the app-scoped identifier: the service stores only a keyed blind index
    of the identifier (so the same person is recognised again at this platform), the reason
    code, and the age band's consequence (adult or not).

Magic credentials of the sandbox verifier (test keys)
-----------------------------------------------------
==========================  ===========  ==========================  =========================
credential starts with      outcome      reason                      age band
==========================  ===========  ==========================  =========================
``test_adult``              passed                                   ``adult``
``test_minor``              passed                                   ``14_to_17``
``test_child``              passed                                   ``under_14``
``test_noage``              passed                                   none (adult unknown)
``test_fail``               failed       ``network_identity_failed``
``test_expired``            failed       ``credential_expired``
``test_unavailable``        unavailable  ``network_identity_unavailable``
anything else               failed       ``credential_invalid``
==========================  ===========  ==========================  =========================

A passing credential's app-scoped identifier is derived from the whole credential, so
``test_adult_alice`` and ``test_adult_bob`` are two people and the same credential is the same
person again. The mode performed is the mode declared.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Protocol, runtime_checkable

import httpx

from app.providers import (
    DEFAULT_TIMEOUT,
    ProviderResponseError,
    ProviderTransportError,
    RetryPolicy,
    json_object,
    post,
    uuid_reference,
)
from app.providers.breaker import CircuitBreaker, call_through
from app.verifiers.base import CheckOutcome

__all__ = [
    "AGE_BANDS",
    "CHECK_TYPE",
    "MODES",
    "HttpNetworkIdentityVerifier",
    "NetworkCredential",
    "NetworkIdentityResult",
    "NetworkIdentityVerifier",
    "SandboxNetworkIdentityVerifier",
    "run_network_check",
]

logger = logging.getLogger(__name__)

CHECK_TYPE: Final = "network_identity"
Mode = Literal["credential", "credential_password", "credential_face", "credential_password_face"]
#: 网证, 网证+口令, 网证+人脸, 网证+口令+人脸.
MODES: Final[tuple[str, ...]] = (
    "credential",
    "credential_password",
    "credential_face",
    "credential_password_face",
)
AgeBand = Literal["under_14", "14_to_17", "adult"]
AGE_BANDS: Final[tuple[str, ...]] = ("under_14", "14_to_17", "adult")

_REASON: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_APP_ID: Final = re.compile(r"[\x21-\x7e]{1,256}")
_MAX_BODY_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class NetworkCredential:
    """The opaque result token of the national app flow and the mode the user chose."""

    token: str
    mode: str

    def __repr__(self) -> str:
        return f"NetworkCredential(<redacted>, mode={self.mode!r})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class NetworkIdentityResult:
    """A network identity verifier's answer. ``app_id`` is personal data: it is blind-indexed
    by the service and never stored, logged or shown (``repr`` leaves it out)."""

    outcome: CheckOutcome
    reason: str | None = None
    app_id: str | None = None
    mode: str | None = None
    age_band: str | None = None
    billable: bool = False
    provider_reference: str | None = None

    def __repr__(self) -> str:
        return (
            f"NetworkIdentityResult(outcome={self.outcome.value}, reason={self.reason!r},"
            f" mode={self.mode!r}, age_band={self.age_band!r})"
        )

    @classmethod
    def unavailable(cls, reason: str) -> NetworkIdentityResult:
        return cls(CheckOutcome.UNAVAILABLE, reason)


@runtime_checkable
class NetworkIdentityVerifier(Protocol):
    """A plug-in that verifies a network identity credential; see the module docstring."""

    name: ClassVar[str]
    check_type: ClassVar[str]
    sandbox: ClassVar[bool]

    async def verify(
        self, credential: NetworkCredential, *, attempt_key: str
    ) -> NetworkIdentityResult:
        """Verify ``credential``; see the module docstring for outcomes."""
        ...


def _well_formed(result: object) -> bool:
    if not isinstance(result, NetworkIdentityResult):
        return False
    if result.reason is not None and not _REASON.fullmatch(result.reason):
        return False
    if result.outcome is CheckOutcome.PASSED:
        return (
            isinstance(result.app_id, str)
            and bool(_APP_ID.fullmatch(result.app_id))
            and result.mode in MODES
            and (result.age_band is None or result.age_band in AGE_BANDS)
        )
    return result.reason is not None


async def run_network_check(
    verifier: NetworkIdentityVerifier, credential: NetworkCredential, *, attempt_key: str
) -> NetworkIdentityResult:
    """Run ``verifier`` and fail closed: an exception or malformed answer is ``unavailable``."""
    try:
        result: object = await verifier.verify(credential, attempt_key=attempt_key)
    except Exception as exc:  # fail closed: a plug-in's error is never a pass
        logger.warning(
            "network identity verifier raised; treating as unavailable",
            extra={"verifier": verifier.name, "error_type": type(exc).__name__},
        )
        return NetworkIdentityResult.unavailable("verifier_error")
    if not _well_formed(result):
        logger.warning(
            "network identity verifier gave a malformed answer", extra={"verifier": verifier.name}
        )
        return NetworkIdentityResult.unavailable("verifier_error")
    assert isinstance(result, NetworkIdentityResult)
    return result


_SANDBOX: Final[tuple[tuple[str, CheckOutcome, str | None, str | None], ...]] = (
    ("test_adult", CheckOutcome.PASSED, None, "adult"),
    ("test_minor", CheckOutcome.PASSED, None, "14_to_17"),
    ("test_child", CheckOutcome.PASSED, None, "under_14"),
    ("test_noage", CheckOutcome.PASSED, None, None),
    ("test_fail", CheckOutcome.FAILED, "network_identity_failed", None),
    ("test_expired", CheckOutcome.FAILED, "credential_expired", None),
    ("test_unavailable", CheckOutcome.UNAVAILABLE, "network_identity_unavailable", None),
)


class SandboxNetworkIdentityVerifier:
    """The deterministic sandbox for test keys; magic credentials in the module docstring."""

    name: ClassVar[str] = "sandbox_network_identity"
    check_type: ClassVar[str] = CHECK_TYPE
    sandbox: ClassVar[bool] = True

    async def verify(
        self, credential: NetworkCredential, *, attempt_key: str
    ) -> NetworkIdentityResult:
        for prefix, outcome, reason, band in _SANDBOX:
            if credential.token.startswith(prefix):
                if outcome is not CheckOutcome.PASSED:
                    return NetworkIdentityResult(outcome, reason)
                app_id = "sbx_" + hashlib.sha256(credential.token.encode()).hexdigest()[:32]
                return NetworkIdentityResult(
                    CheckOutcome.PASSED, None, app_id, credential.mode, band
                )
        return NetworkIdentityResult(CheckOutcome.FAILED, "credential_invalid")


#: ``result`` of the gateway protocol -> outcome; reasons pass through if well formed.
#: The reasons that say the gateway is not working: these (and exceptions) count against its
#: circuit breaker; definite answers do not.
_GATEWAY_FAILURES: Final = frozenset(
    {"network_identity_unavailable", "network_identity_bad_response"}
)
_GATEWAY_RESULTS: Final = {
    "pass": CheckOutcome.PASSED,
    "fail": CheckOutcome.FAILED,
    "unavailable": CheckOutcome.UNAVAILABLE,
}


class HttpNetworkIdentityVerifier:
    """Verifies through the operator's own gateway to the national service.

    Protocol: ``POST {base_url}/v1/network-identity/verify`` with the JSON body
    ``{"credential", "mode", "attempt_key"}`` (and ``Authorization: Bearer <token>`` when a
    token is set). The gateway answers 200 with ``{"result": "pass" | "fail" | "unavailable",
    "reason"?, "app_id"?, "mode"?, "age_band"?, "billable"?, "request_id"?}``. ``pass`` requires
    ``app_id`` and ``mode``; ``fail`` and ``unavailable`` a ``reason`` code (defaults
    ``network_identity_failed`` / ``network_identity_unavailable``). Anything else fails closed:
    ``unavailable`` / ``network_identity_bad_response``. Timeouts, network errors and HTTP
    502/503/504 are retried (``max_attempts`` calls in all), then ``unavailable`` /
    ``network_identity_unavailable``; a circuit breaker guards the gateway. The credential
    travels only in the body; only a UUID ``request_id`` is kept as provider reference.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        base_url: The gateway's root URL.
        api_token: Bearer token the gateway requires, if any.
        max_attempts: Calls in all, retries included (at least 1).
        backoff_base: Seconds; see :class:`~app.providers.RetryPolicy`.
        breaker: The circuit breaker; a new ``CircuitBreaker()`` if ``None``.
        sleep: Awaited for back-off delays; tests inject a fake.
        timeout: Per-request timeouts.
    """

    name: ClassVar[str] = "http_network_identity"
    check_type: ClassVar[str] = CHECK_TYPE
    sandbox: ClassVar[bool] = False

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_token: str | None = None,
        *,
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/v1/network-identity/verify"
        self._token = api_token
        self._retry = RetryPolicy(max_attempts, backoff_base, sleep)
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._timeout = timeout

    async def verify(
        self, credential: NetworkCredential, *, attempt_key: str
    ) -> NetworkIdentityResult:
        """Ask the gateway (see the class docstring)."""
        body = json.dumps(
            {"credential": credential.token, "mode": credential.mode, "attempt_key": attempt_key},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        headers = {"content-type": "application/json"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        answer = await call_through(
            self.breaker, lambda: self._ask(body, headers), lambda r: r.reason in _GATEWAY_FAILURES
        )
        if answer is None:
            return NetworkIdentityResult.unavailable("circuit_open")
        logger.info(
            "network identity check finished",
            extra={"verifier": self.name, "outcome": answer.outcome.value, "reason": answer.reason},
        )
        return answer

    async def _ask(self, body: bytes, headers: dict[str, str]) -> NetworkIdentityResult:
        async def attempt() -> httpx.Response:
            return await post(
                self._client,
                self._url,
                content=body,
                headers=headers,
                request_timeout=self._timeout,
            )

        try:
            response = await self._retry.run(attempt)
            document = json_object(response) if response.status_code == 200 else None
        except ProviderTransportError:
            return NetworkIdentityResult.unavailable("network_identity_unavailable")
        except ProviderResponseError:
            document = None
        parsed = _parse(document) if document is not None else None
        return parsed or NetworkIdentityResult.unavailable("network_identity_bad_response")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self._url!r}, breaker={self.breaker!r})"


def _parse(document: dict[str, Any]) -> NetworkIdentityResult | None:
    outcome = _GATEWAY_RESULTS.get(str(document.get("result")))
    if outcome is None:
        return None
    reference = uuid_reference(document.get("request_id"))
    billable = document.get("billable") is True
    if outcome is CheckOutcome.PASSED:
        result = NetworkIdentityResult(
            outcome,
            None,
            document.get("app_id") if isinstance(document.get("app_id"), str) else None,
            document.get("mode") if isinstance(document.get("mode"), str) else None,
            document.get("age_band") if isinstance(document.get("age_band"), str) else None,
            billable,
            reference,
        )
        return result if _well_formed(result) else None
    default = (
        "network_identity_failed"
        if outcome is CheckOutcome.FAILED
        else ("network_identity_unavailable")
    )
    reason = document.get("reason", default)
    if not isinstance(reason, str) or not _REASON.fullmatch(reason):
        return None
    if outcome is CheckOutcome.UNAVAILABLE:
        return NetworkIdentityResult.unavailable(reason)
    return NetworkIdentityResult(outcome, reason, billable=billable, provider_reference=reference)
