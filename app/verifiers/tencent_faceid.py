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

Transport, retries, breaker (:mod:`app.verifiers.cloud`, :mod:`app.providers.base`)
------------------------------------------------------------------------------------
Timeouts, network errors and HTTP 502/503/504 are retried (``max_attempts`` calls in all, with
back-off), then give ``registry_unavailable``. A :class:`~app.providers.breaker.CircuitBreaker`
counts ``registry_unavailable``, ``registry_maintenance`` and ``registry_bad_response`` (and
exceptions) as failures; while open, checks return ``circuit_open`` without a request. Only a
UUID ``RequestId`` is kept as the provider reference. The ``attempt_key`` is not sent: these
APIs have no de-duplication parameter, so a retried timeout may be billed twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, Self, Unpack

import httpx

from app.providers import mainland_mobile, tencent, uuid_reference
from app.providers.base import AdapterOptions, CodeTable
from app.providers.tencent import ENV_SECRET_ID, ENV_SECRET_KEY, TencentAdapter
from app.verifiers.base import CheckOutcome, CheckResult, Subject
from app.verifiers.cloud import BAD_RESPONSE, CloudCheck, Entry

__all__ = ["ENV_SECRET_ID", "ENV_SECRET_KEY", "TencentIdCardVerifier", "TencentPhoneVerifier"]

_HOST: Final = "faceid.tencentcloudapi.com"
_SERVICE: Final = "faceid"
_VERSION: Final = "2018-03-01"

_PASSED: Final = Entry(CheckOutcome.PASSED, None, True)
_INVALID: Final = Entry(CheckOutcome.FAILED, "invalid_identity")
_NOT_FOUND: Final = Entry(CheckOutcome.FAILED, "id_not_found")
_DOWN: Final = Entry(CheckOutcome.UNAVAILABLE, "registry_unavailable")
_QUOTA: Final = Entry(CheckOutcome.UNAVAILABLE, "registry_quota_exceeded")
_AUTH: Final = Entry(CheckOutcome.UNAVAILABLE, "provider_auth_failed")
_BAD_REQUEST: Final = Entry(CheckOutcome.UNAVAILABLE, "provider_bad_request")

_ID_RESULTS: Final = CodeTable(
    BAD_RESPONSE,
    {
        "0": _PASSED,
        "-1": Entry(CheckOutcome.FAILED, "id_mismatch", True),
        "-2": _INVALID,
        "-3": _INVALID,
        "-4": _DOWN,
        "-5": _NOT_FOUND,
        "-6": Entry(CheckOutcome.UNAVAILABLE, "registry_maintenance"),
        "-7": _QUOTA,
    },
)
_PHONE_RESULTS: Final = CodeTable(
    BAD_RESPONSE,
    {
        "0": _PASSED,
        "-4": Entry(CheckOutcome.FAILED, "phone_mismatch", True),
        "-6": _INVALID,
        "-7": _INVALID,
        "-8": _INVALID,
        "-9": _NOT_FOUND,
        "-11": _DOWN,
        "-12": _QUOTA,
        "-13": Entry(CheckOutcome.UNAVAILABLE, "phone_unsupported"),
    },
)
# Error.Code families (the part before the first "."), e.g. "AuthFailure.SignatureExpire".
_ERRORS: Final = CodeTable(
    BAD_RESPONSE,
    families={
        "AuthFailure": _AUTH,
        "UnauthorizedOperation": _AUTH,
        "RequestLimitExceeded": Entry(CheckOutcome.UNAVAILABLE, "registry_rate_limited"),
        "LimitExceeded": _QUOTA,
        "InvalidParameter": _BAD_REQUEST,
        "InvalidParameterValue": _INVALID,
        "MissingParameter": _BAD_REQUEST,
        "InternalError": _DOWN,
        "FailedOperation": _DOWN,
        "ResourceUnavailable": _DOWN,
    },
)


class _TencentFaceIdVerifier(CloudCheck, TencentAdapter):
    """Shared body of the FaceID verifiers; see the module docstring."""

    _label: ClassVar[str] = "tencent faceid"
    _action: ClassVar[str]
    _results: ClassVar[CodeTable[Entry]]

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        secret_id: str,
        secret_key: str,
        token: str | None = None,
        host: str = _HOST,
        max_attempts: int = 3,
        **options: Unpack[AdapterOptions],
    ) -> None:
        super().__init__(
            client,
            secret_id=secret_id,
            secret_key=secret_key,
            token=token,
            host=host,
            max_attempts=max_attempts,
            **options,
        )

    @classmethod
    def from_env(cls, client: httpx.AsyncClient, env: Mapping[str, str]) -> Self:
        """Build from ``REALNAME_TENCENT_SECRET_ID``, ``REALNAME_TENCENT_SECRET_KEY`` and the
        optional ``REALNAME_TENCENT_TOKEN`` (temporary credentials).

        Raises:
            ValueError: naming the missing variables (never their values).
        """
        credentials, _ = tencent.credentials_from_env(env)
        return cls(client, **credentials)

    def _request(self, subject: Subject) -> dict[str, str] | None:
        return {"IdCard": subject.id_number, "Name": subject.real_name}

    async def _ask(self, request: dict[str, str]) -> dict[str, Any]:
        return await self.signed_call(
            service=_SERVICE, action=self._action, version=_VERSION, region=None, payload=request
        )

    def _map(self, answer: dict[str, Any]) -> tuple[CheckResult, str | None]:
        reference = uuid_reference(answer.get("RequestId"))
        code = tencent.error_code(answer)
        if code is not None:
            return _ERRORS(code).result(reference), code
        result = answer.get("Result")
        return self._results(result if isinstance(result, str) else None).result(reference), None


class TencentIdCardVerifier(_TencentFaceIdVerifier):
    """Name + ID number check with FaceID ``IdCardVerification``.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        secret_id: The Tencent Cloud SecretId.
        secret_key: The Tencent Cloud SecretKey.
        token: The STS session token (``X-TC-Token``), with temporary credentials.
        host: The API host, ``faceid.tencentcloudapi.com`` by default.
        max_attempts: Calls in all, retries included (at least 1).
        **options: ``backoff_base``, ``breaker``, ``sleep``, ``clock`` (for
            ``X-TC-Timestamp``), ``timeout``, ``scheme``; see
            :class:`~app.providers.base.ProviderAdapter`.

    Raises:
        ValueError: empty credentials, ``max_attempts`` < 1 or ``backoff_base`` < 0.
    """

    name: ClassVar[str] = "tencent_faceid_id2"
    check_type: ClassVar[str] = "id_registry"
    _action: ClassVar[str] = "IdCardVerification"
    _results: ClassVar[CodeTable[Entry]] = _ID_RESULTS


class TencentPhoneVerifier(_TencentFaceIdVerifier):
    """Name + ID number + mainland mobile check with FaceID ``PhoneVerification`` (simple mode).

    Constructed like :class:`TencentIdCardVerifier`.
    """

    name: ClassVar[str] = "tencent_faceid_phone3"
    check_type: ClassVar[str] = "carrier_3e"
    _action: ClassVar[str] = "PhoneVerification"
    _results: ClassVar[CodeTable[Entry]] = _PHONE_RESULTS

    def _request(self, subject: Subject) -> dict[str, str] | None:
        phone = mainland_mobile(subject.phone)
        if phone is None:
            return None
        return {
            "IdCard": subject.id_number,
            "Name": subject.real_name,
            "Phone": phone,
            "VerifyMode": "0",
        }
