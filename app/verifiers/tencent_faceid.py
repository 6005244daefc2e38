"""Verifiers backed by Tencent Cloud FaceID (人脸核身) element checks, API version 2018-03-01.

:class:`TencentIdCardVerifier` (``tencent_faceid_id2``, ``id_registry``)
    ``IdCardVerification``: name + resident ID number against the authority's registry.
:class:`TencentPhoneVerifier` (``tencent_faceid_phone3``, ``carrier_3e``)
    ``PhoneVerification`` (simple mode, ``VerifyMode=0``): name + ID number + mainland mobile
    against the carrier's real-name records. A phone that is not a mainland mobile is not sent:
    the result is ``unavailable`` / ``phone_unsupported`` without a call.

Both call ``faceid.tencentcloudapi.com`` with TC3-HMAC-SHA256 (:mod:`app.providers.tencent`),
without ``X-TC-Region`` (the API reference says these APIs take none). The subject's fields
travel only in the JSON body, in plain text: FaceID's optional field encryption (``Encryption``
/ ``CiphertextBlob``, AES-256-CBC or SM4-GCM with a key wrapped by Tencent's public key) is not
implemented, so TLS is the only protection on the wire. Nothing of the subject is logged.

Environment (:meth:`from_env`)
------------------------------
``REALNAME_TENCENT_SECRET_ID``, ``REALNAME_TENCENT_SECRET_KEY`` (both required);
``REALNAME_TENCENT_TOKEN`` (optional: the session token of temporary STS credentials, sent as
``X-TC-Token``). ``REALNAME_TENCENT_REGION`` is not read: these APIs take no region.

Result codes (``Response.Result``; billing as documented by Tencent)
--------------------------------------------------------------------
``IdCardVerification``:

======  ============================  ===========  =======================  ========
Result  Meaning                       Outcome      Reason                   Billable
======  ============================  ===========  =======================  ========
0       name and ID number match      passed                                yes
-1      name and ID number differ     failed       id_mismatch              yes
-2      invalid ID number             failed       invalid_identity         no
-3      invalid name                  failed       invalid_identity         no
-4      registry service error        unavailable  registry_unavailable     no
-5      ID number not in registry     failed       id_not_found             no
-6      registry being upgraded       unavailable  registry_maintenance     no
-7      daily verification limit      unavailable  registry_quota_exceeded  no
======  ============================  ===========  =======================  ========

``PhoneVerification``:

======  ============================  ===========  =======================  ========
Result  Meaning                       Outcome      Reason                   Billable
======  ============================  ===========  =======================  ========
0       the three elements match      passed                                yes
-4      the three elements differ     failed       phone_mismatch           yes
-6      invalid phone number          failed       invalid_identity         no
-7      invalid ID number             failed       invalid_identity         no
-8      name check failed             failed       invalid_identity         no
-9      no record                     failed       id_not_found             no
-11     verification centre busy      unavailable  registry_unavailable     no
-12     daily verification limit      unavailable  registry_quota_exceeded  no
-13     number range not supported    unavailable  phone_unsupported        no
======  ============================  ===========  =======================  ========

``Response.Error.Code`` (never billed), by family (the part before the first ``.``):
``AuthFailure``, ``UnauthorizedOperation`` (bad key or signature, clock skew, service not
activated, arrears, no CAM permission) -> ``provider_auth_failed``; ``RequestLimitExceeded``
(QPS throttling) -> ``registry_rate_limited``; ``LimitExceeded`` -> ``registry_quota_exceeded``;
``InvalidParameterValue`` (a value refused; the only values are the subject's fields) -> failed
``invalid_identity``; ``InvalidParameter``, ``MissingParameter`` (the request itself was not
understood, not the person's fault) -> ``provider_bad_request``; ``InternalError``,
``FailedOperation``, ``ResourceUnavailable`` -> ``registry_unavailable``. Any other code, any
other ``Result``, or a body not in the documented shape -> ``registry_bad_response``: fail
closed, never passed.

Transport, retries, breaker
---------------------------
Timeouts, network errors and HTTP 502/503/504 are retried (``max_attempts`` calls in all, with
back-off), then give ``registry_unavailable``. A :class:`~app.verifiers.breaker.CircuitBreaker`
counts ``registry_unavailable``, ``registry_maintenance`` and ``registry_bad_response`` (and
exceptions) as failures; while open, checks return ``circuit_open`` without a request. Only a
UUID ``RequestId`` is kept as the provider reference. The ``attempt_key`` is not sent: these
APIs have no de-duplication parameter, so a retried timeout may be billed twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final, Self

import httpx

from app.providers import (
    DEFAULT_TIMEOUT,
    ProviderResponseError,
    ProviderTransportError,
    RetryPolicy,
    mainland_mobile,
    optional_env,
    read_env,
    tencent,
    uuid_reference,
)
from app.verifiers.base import CheckOutcome, CheckResult, Subject
from app.verifiers.breaker import CircuitBreaker, call_through

__all__ = ["ENV_SECRET_ID", "ENV_SECRET_KEY", "TencentIdCardVerifier", "TencentPhoneVerifier"]

logger = logging.getLogger(__name__)

ENV_SECRET_ID: Final = "REALNAME_TENCENT_SECRET_ID"  # noqa: S105 (a name)
ENV_SECRET_KEY: Final = "REALNAME_TENCENT_SECRET_KEY"  # noqa: S105 (a name)
ENV_TOKEN: Final = "REALNAME_TENCENT_TOKEN"  # noqa: S105 (a name)

_HOST: Final = "faceid.tencentcloudapi.com"
_SERVICE: Final = "faceid"
_VERSION: Final = "2018-03-01"

Entry = tuple[CheckOutcome, str | None, bool]
_PASSED: Final[Entry] = (CheckOutcome.PASSED, None, True)
_INVALID: Final[Entry] = (CheckOutcome.FAILED, "invalid_identity", False)
_NOT_FOUND: Final[Entry] = (CheckOutcome.FAILED, "id_not_found", False)
_DOWN: Final[Entry] = (CheckOutcome.UNAVAILABLE, "registry_unavailable", False)
_QUOTA: Final[Entry] = (CheckOutcome.UNAVAILABLE, "registry_quota_exceeded", False)
_BAD: Final[Entry] = (CheckOutcome.UNAVAILABLE, "registry_bad_response", False)

_ID_RESULTS: Final[Mapping[str, Entry]] = {
    "0": _PASSED,
    "-1": (CheckOutcome.FAILED, "id_mismatch", True),
    "-2": _INVALID,
    "-3": _INVALID,
    "-4": _DOWN,
    "-5": _NOT_FOUND,
    "-6": (CheckOutcome.UNAVAILABLE, "registry_maintenance", False),
    "-7": _QUOTA,
}
_PHONE_RESULTS: Final[Mapping[str, Entry]] = {
    "0": _PASSED,
    "-4": (CheckOutcome.FAILED, "phone_mismatch", True),
    "-6": _INVALID,
    "-7": _INVALID,
    "-8": _INVALID,
    "-9": _NOT_FOUND,
    "-11": _DOWN,
    "-12": _QUOTA,
    "-13": (CheckOutcome.UNAVAILABLE, "phone_unsupported", False),
}
# Error.Code families (the part before the first "."), e.g. "AuthFailure.SignatureExpire".
_ERRORS: Final[Mapping[str, Entry]] = {
    "AuthFailure": (CheckOutcome.UNAVAILABLE, "provider_auth_failed", False),
    "UnauthorizedOperation": (CheckOutcome.UNAVAILABLE, "provider_auth_failed", False),
    "RequestLimitExceeded": (CheckOutcome.UNAVAILABLE, "registry_rate_limited", False),
    "LimitExceeded": _QUOTA,
    "InvalidParameter": (CheckOutcome.UNAVAILABLE, "provider_bad_request", False),
    "InvalidParameterValue": _INVALID,
    "MissingParameter": (CheckOutcome.UNAVAILABLE, "provider_bad_request", False),
    "InternalError": _DOWN,
    "FailedOperation": _DOWN,
    "ResourceUnavailable": _DOWN,
}


def _build(entry: Entry, reference: str | None) -> CheckResult:
    outcome, reason, billable = entry
    if outcome is CheckOutcome.PASSED:
        return CheckResult.passed(billable=billable, provider_reference=reference)
    if outcome is CheckOutcome.FAILED:
        assert reason is not None
        return CheckResult.failed(reason, billable=billable, provider_reference=reference)
    assert reason is not None
    return CheckResult.unavailable(reason, provider_reference=reference)


def _error_entry(code: str) -> Entry:
    return _ERRORS.get(code.split(".", 1)[0], _BAD)


class _TencentFaceIdVerifier:
    """Shared body of the FaceID verifiers; see the module docstring."""

    name: ClassVar[str]
    check_type: ClassVar[str]
    sandbox: ClassVar[bool] = False
    _action: ClassVar[str]
    _results: ClassVar[Mapping[str, Entry]]

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        secret_id: str,
        secret_key: str,
        token: str | None = None,
        host: str = _HOST,
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        scheme: str = "https",
    ) -> None:
        if not secret_id or not secret_key:
            raise ValueError("secret_id and secret_key must not be empty")
        self._client = client
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._token = token
        self._host = host
        self._retry = RetryPolicy(max_attempts, backoff_base, sleep)
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._clock = clock
        self._timeout = timeout
        self._scheme = scheme

    @classmethod
    def from_env(cls, client: httpx.AsyncClient, env: Mapping[str, str]) -> Self:
        """Build from ``REALNAME_TENCENT_SECRET_ID``, ``REALNAME_TENCENT_SECRET_KEY`` and the
        optional ``REALNAME_TENCENT_TOKEN`` (temporary credentials).

        Raises:
            ValueError: naming the missing variables (never their values).
        """
        values = read_env(env, [ENV_SECRET_ID, ENV_SECRET_KEY])
        return cls(
            client,
            secret_id=values[ENV_SECRET_ID],
            secret_key=values[ENV_SECRET_KEY],
            token=optional_env(env, ENV_TOKEN),
        )

    def _payload(self, subject: Subject) -> dict[str, str] | None:
        return {"IdCard": subject.id_number, "Name": subject.real_name}

    async def check(self, subject: Subject, *, attempt_key: str) -> CheckResult:
        """Ask FaceID, with retries, back-off and the circuit breaker.

        Args:
            subject: The canonical identity fields; sent in the JSON body only.
            attempt_key: Not sent (FaceID has no de-duplication parameter).

        Returns:
            The result mapped as in the module docstring, or ``unavailable`` / ``circuit_open``.

        Raises:
            httpx.HTTPError: a non-retriable transport problem (a configuration error).
        """
        payload = self._payload(subject)
        if payload is None:
            return CheckResult.unavailable("phone_unsupported")
        answer = await call_through(self.breaker, lambda: self._ask(payload), lambda a: a[0])
        if answer is None:
            return CheckResult.unavailable("circuit_open")
        result, code = answer
        logger.info(
            "tencent faceid check finished",
            extra={
                "verifier": self.name,
                "outcome": result.outcome.value,
                "reason": result.reason,
                "provider_code": code,
            },
        )
        return result

    async def _ask(self, payload: dict[str, str]) -> tuple[CheckResult, str | None]:
        try:
            response = await self._retry.run(lambda: self._call(payload))
        except ProviderTransportError as exc:
            return CheckResult.unavailable("registry_unavailable"), exc.reason
        except ProviderResponseError:
            return CheckResult.unavailable("registry_bad_response"), None
        reference = uuid_reference(response.get("RequestId"))
        code = tencent.error_code(response)
        if code is not None:
            return _build(_error_entry(code), reference), code
        result = response.get("Result")
        entry = self._results.get(result) if isinstance(result, str) else None
        return _build(entry or _BAD, reference), None

    def _call(self, payload: dict[str, str]) -> Awaitable[dict[str, Any]]:
        return tencent.call(
            self._client,
            host=self._host,
            service=_SERVICE,
            action=self._action,
            version=_VERSION,
            region=None,
            payload=payload,
            secret_id=self._secret_id,
            secret_key=self._secret_key,
            token=self._token,
            clock=self._clock,
            request_timeout=self._timeout,
            scheme=self._scheme,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self._host!r}, breaker={self.breaker!r})"


class TencentIdCardVerifier(_TencentFaceIdVerifier):
    """Name + ID number check with FaceID ``IdCardVerification``.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        secret_id: The Tencent Cloud SecretId.
        secret_key: The Tencent Cloud SecretKey.
        token: The STS session token (``X-TC-Token``), with temporary credentials.
        host: The API host, ``faceid.tencentcloudapi.com`` by default.
        max_attempts: Calls in all, retries included (at least 1).
        backoff_base: Seconds; see :class:`~app.providers.RetryPolicy`.
        breaker: The circuit breaker; a new ``CircuitBreaker()`` if ``None``.
        sleep: Awaited for back-off delays; tests inject a fake.
        clock: Current Unix time for ``X-TC-Timestamp``; tests inject a fake.
        timeout: Per-request timeouts.
        scheme: ``"https"``; tests may use ``"http"``.

    Raises:
        ValueError: empty credentials, ``max_attempts`` < 1 or ``backoff_base`` < 0.
    """

    name: ClassVar[str] = "tencent_faceid_id2"
    check_type: ClassVar[str] = "id_registry"
    _action: ClassVar[str] = "IdCardVerification"
    _results: ClassVar[Mapping[str, Entry]] = _ID_RESULTS


class TencentPhoneVerifier(_TencentFaceIdVerifier):
    """Name + ID number + mainland mobile check with FaceID ``PhoneVerification`` (simple mode).

    Constructed like :class:`TencentIdCardVerifier`.
    """

    name: ClassVar[str] = "tencent_faceid_phone3"
    check_type: ClassVar[str] = "carrier_3e"
    _action: ClassVar[str] = "PhoneVerification"
    _results: ClassVar[Mapping[str, Entry]] = _PHONE_RESULTS

    def _payload(self, subject: Subject) -> dict[str, str] | None:
        phone = mainland_mobile(subject.phone)
        if phone is None:
            return None
        return {
            "IdCard": subject.id_number,
            "Name": subject.real_name,
            "Phone": phone,
            "VerifyMode": "0",
        }
