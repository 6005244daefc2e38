"""Verifiers that call an ID registry over HTTP: the wire protocol of the standalone mock.

They speak the protocol of :mod:`app.mock_registry_server` (``POST /v1/id-check``,
``POST /v1/carrier-check``), so a deployment can be pointed at a mock registry run by an
integrator, and a real registry gateway speaking the same protocol can be plugged in.

Behaviour
---------
* Personal data travels only in the JSON request body: never in the URL, a header or a log
  line. The ``attempt_key`` is sent as the ``Idempotency-Key`` header (so it must be
  printable ASCII of at most 255 characters, which the mock server enforces), the optional
  shared token as ``Authorization: Bearer``.
* Each request has its own timeout (connect 2 s, read/write/pool 5 s unless given).
* Retriable outcomes are retried up to ``max_attempts`` calls in all, with exponential back-off
  and jitter (:class:`app.providers.RetryPolicy`, the one every adapter uses): connection and
  network errors, timeouts, and HTTP 502, 503 and 504. When every
  attempt fails the result is ``unavailable`` with reason ``registry_unavailable`` (or
  ``registry_maintenance`` if the last 503 said the registry is being upgraded).
* HTTP 429 (the daily quota) is not retried: ``unavailable`` / ``registry_quota_exceeded``.
* HTTP 200 answers map as in the in-process mock
  (:func:`app.verifiers.mock_registry.to_check_result`). Any other status, or a body that is
  not exactly one of the answers the endpoint may give, is ``unavailable`` /
  ``registry_bad_response``: fail closed, never passed. Only a UUID ``request_id`` is kept
  (as ``provider_reference``), so nothing a registry echoes back can be stored.
* A :class:`~app.providers.breaker.CircuitBreaker` guards the registry. One check (with its
  retries) counts as one call: it fails when the retries are exhausted or the response is bad,
  and succeeds when the registry answers (a 429 included, since the registry is up). While the
  breaker is open, checks return ``unavailable`` / ``circuit_open`` without any request.
  Exceptions other than the retriable transport errors propagate (the runner turns them into
  ``verifier_error``) and count as failures.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final

import httpx

from app.providers import DEFAULT_TIMEOUT, RetryPolicy
from app.providers.breaker import CircuitBreaker, call_through
from app.verifiers.base import CheckResult, Subject, upstream_failed
from app.verifiers.mock_registry import RegistryAnswer, to_check_result

__all__ = ["DEFAULT_TIMEOUT", "HttpCarrierVerifier", "HttpIdRegistryVerifier"]

logger = logging.getLogger(__name__)

_RETRIABLE_ERRORS: Final = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_RETRIABLE_STATUSES: Final = frozenset({502, 503, 504})
# A registry answer is a few dozen bytes; anything much larger is not one.
_MAX_BODY_BYTES: Final = 16 * 1024

_ID_ANSWERS: Final = frozenset(
    {
        RegistryAnswer.MATCH,
        RegistryAnswer.MISMATCH,
        RegistryAnswer.NOT_FOUND,
        RegistryAnswer.INVALID_IDENTITY,
    }
)
_CARRIER_ANSWERS: Final = _ID_ANSWERS | {RegistryAnswer.PHONE_MISMATCH}


class _Failed(Exception):
    """One attempt ended in a retriable failure; ``reason`` is reported if it is the last."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _HttpRegistryVerifier:
    """Shared body of the HTTP registry verifiers; see the module docstring."""

    name: ClassVar[str]
    check_type: ClassVar[str]
    sandbox: ClassVar[bool] = False
    _path: ClassVar[str]
    _answers: ClassVar[frozenset[RegistryAnswer]]

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_token: str | None = None,
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._retry = RetryPolicy(max_attempts, backoff_base, sleep, retry_on=(_Failed,))
        self._client = client
        self._url = base_url.rstrip("/") + self._path
        self._headers = {"Accept": "application/json"}
        if api_token is not None:
            self._headers["Authorization"] = f"Bearer {api_token}"
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._timeout = timeout

    def _payload(self, subject: Subject) -> dict[str, str]:
        return {"real_name": subject.real_name, "id_number": subject.id_number}

    async def check(self, subject: Subject, *, attempt_key: str) -> CheckResult:
        """Ask the registry, with retries, back-off and the circuit breaker.

        Args:
            subject: The canonical identity fields; sent in the JSON body only.
            attempt_key: Sent as the ``Idempotency-Key`` header of every attempt.

        Returns:
            The mapped answer, or ``unavailable`` with reason ``circuit_open``,
            ``registry_unavailable``, ``registry_maintenance``, ``registry_quota_exceeded`` or
            ``registry_bad_response``.

        Raises:
            httpx.HTTPError: a non-retriable transport problem (e.g. an unsupported URL
                scheme: a configuration error). The runner treats it as ``verifier_error``.
        """
        result = await call_through(
            self.breaker,
            lambda: self._call_with_retries(self._payload(subject), attempt_key),
            upstream_failed,
        )
        return result if result is not None else CheckResult.unavailable("circuit_open")

    async def _call_with_retries(self, payload: dict[str, str], attempt_key: str) -> CheckResult:
        headers = {**self._headers, "Idempotency-Key": attempt_key}
        numbers = itertools.count(1)
        try:
            return await self._retry.run(lambda: self._attempt(payload, headers, next(numbers)))
        except _Failed as failure:
            return CheckResult.unavailable(failure.reason)

    async def _attempt(
        self, payload: dict[str, str], headers: dict[str, str], attempt: int
    ) -> CheckResult:
        log_extra: dict[str, Any] = {"verifier": self.name, "attempt": attempt}
        try:
            response = await self._client.post(
                self._url, json=payload, headers=headers, timeout=self._timeout
            )
        except _RETRIABLE_ERRORS as exc:
            logger.info(
                "registry call failed", extra={**log_extra, "error_type": type(exc).__name__}
            )
            raise _Failed("registry_unavailable") from None
        status = response.status_code
        if status in _RETRIABLE_STATUSES:
            logger.info("registry answered %d", status, extra={**log_extra, "status": status})
            body = _json_object(response)
            maintenance = status == 503 and body is not None and body.get("result") == "maintenance"
            raise _Failed("registry_maintenance" if maintenance else "registry_unavailable")
        if status == 429:
            return CheckResult.unavailable("registry_quota_exceeded")
        if status == 200:
            result = self._parse_answer(response)
            if result is not None:
                return result
        logger.warning(
            "registry gave an unexpected response", extra={**log_extra, "status": status}
        )
        return CheckResult.unavailable("registry_bad_response")

    def _parse_answer(self, response: httpx.Response) -> CheckResult | None:
        """The answer in a 200 body, or ``None`` unless it is exactly a valid one."""
        body = _json_object(response)
        if body is None:
            return None
        result, request_id = body.get("result"), body.get("request_id")
        if not isinstance(result, str) or result not in self._answers:
            return None
        if request_id is not None:
            # Only a UUID is stored as the provider reference: it cannot echo personal data.
            try:
                request_id = str(uuid.UUID(request_id))
            except (TypeError, ValueError, AttributeError):
                return None
        return to_check_result(RegistryAnswer(result), provider_reference=request_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self._url!r}, breaker={self.breaker!r})"


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    if len(response.content) > _MAX_BODY_BYTES:
        return None
    try:
        body = response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from it
        return None
    return body if isinstance(body, dict) else None


class HttpIdRegistryVerifier(_HttpRegistryVerifier):
    """ID registry (name + ID number) check over HTTP: ``POST {base_url}/v1/id-check``.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        base_url: The registry's root URL, e.g. ``"http://127.0.0.1:8090"``.
        api_token: Shared bearer token, if the registry requires one.
        max_attempts: Calls in all, retries included (at least 1).
        backoff_base: Seconds; the delay before retry *n* is drawn from
            ``[b * 2**(n-1) / 2, b * 2**(n-1)]``, capped at 10 s.
        breaker: The circuit breaker; a new ``CircuitBreaker()`` (5 failures, 30 s) if
            ``None``. Share one between verifiers that call the same registry if wanted.
        sleep: Awaited for back-off delays; tests inject a fake.
        timeout: Per-request timeouts, :data:`DEFAULT_TIMEOUT` by default.

    Raises:
        ValueError: ``max_attempts`` < 1 or ``backoff_base`` < 0.
    """

    name: ClassVar[str] = "http_id_registry"
    check_type: ClassVar[str] = "id_registry"
    _path: ClassVar[str] = "/v1/id-check"
    _answers: ClassVar[frozenset[RegistryAnswer]] = _ID_ANSWERS


class HttpCarrierVerifier(_HttpRegistryVerifier):
    """Carrier three-element check over HTTP: ``POST {base_url}/v1/carrier-check``.

    Constructed like :class:`HttpIdRegistryVerifier`.
    """

    name: ClassVar[str] = "http_carrier_3e"
    check_type: ClassVar[str] = "carrier_3e"
    _path: ClassVar[str] = "/v1/carrier-check"
    _answers: ClassVar[frozenset[RegistryAnswer]] = _CARRIER_ANSWERS

    def _payload(self, subject: Subject) -> dict[str, str]:
        return {**super()._payload(subject), "phone": subject.phone}
