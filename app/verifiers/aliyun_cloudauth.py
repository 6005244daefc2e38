"""Verifiers backed by Alibaba Cloud ID Verification (实人认证, ``cloudauth`` 2019-03-07).

:class:`AliyunId2MetaVerifier` (``aliyun_id2meta``, ``id_registry``)
    ``Id2MetaVerify``: name + resident ID number. Sent in plain text (``ParamType=normal``): the
    ID two-element check does not accept MD5 input.
:class:`AliyunMobile3MetaVerifier` (``aliyun_mobile3meta``, ``carrier_3e``)
    ``Mobile3MetaSimpleVerify``: name + ID number + mainland mobile. By default every field is
    sent as its 32-character lowercase MD5 (``ParamType=md5``; UTF-8 name, ID number with an
    uppercase ``X``, 11-digit national mobile), so no plain value leaves the service. MD5 of such
    small input spaces is not secrecy against the provider (it can be brute-forced), only less
    exposure in transit and in logs; ``param_type="normal"`` sends plain text. A phone that is
    not a mainland mobile is not sent: ``unavailable`` / ``phone_unsupported`` without a call.

Both ``POST`` to the cloudauth endpoint with ACS3-HMAC-SHA256 (:mod:`app.providers.aliyun`),
every parameter in the form-encoded body, never in the URL. Nothing of the subject is logged.

Where the parameters go, and the evidence: the official generated client
(``aliyun/alibabacloud-python-sdk``,
``cloudauth-20190307/alibabacloud_cloudauth20190307/client.py``,
``id_2meta_verify_with_options`` and ``mobile_3meta_simple_verify_with_options``; likewise the
PHP client and the legacy ``aliyunsdkcloudauth`` ``Id2MetaVerifyRequest``, which uses
``add_query_param``) builds these parameters as ``query`` with ``reqBodyType='formData'``. The
RPC gateway accepts an RPC parameter from the query string or from a form body alike, so this
adapter deliberately keeps them in the signed form body: a name and ID number in a URL would end
up in proxies' and load balancers' access logs. Unlike ``SendSms``
(:mod:`app.senders.aliyun_sms`, which follows the SDK), the body shape is what the tests pin here.

Environment (:meth:`from_env`)
------------------------------
``REALNAME_ALIYUN_ACCESS_KEY_ID``, ``REALNAME_ALIYUN_ACCESS_KEY_SECRET`` (both required);
``REALNAME_ALIYUN_SECURITY_TOKEN`` (optional: STS credentials, sent as ``x-acs-security-token``);
``REALNAME_ALIYUN_REGION`` (default ``cn-hangzhou``) chooses the endpoint:
``cloudauth.cn-beijing.aliyuncs.com`` or ``cloudauth.cn-shanghai.aliyuncs.com`` for those two
regions, the central ``cloudauth.aliyuncs.com`` otherwise (the documented endpoints).

Result codes (billing as documented by Alibaba Cloud)
-----------------------------------------------------
``Code`` (as a string or a number) and, for ``Code`` 200, ``ResultObject.BizCode``:

==================  ==========================  ===========  =========================  ========
Code / BizCode      Meaning                     Outcome      Reason                     Billable
==================  ==========================  ===========  =========================  ========
200 / 1             consistent                  passed                                  yes
200 / 2             inconsistent                failed       id_mismatch (2-element),   yes
                                                             phone_mismatch (3-element)
200 / 3             no record                   failed       id_not_found               no
400                 parameter missing           unavailable  provider_bad_request       no
401                 parameter invalid           failed       invalid_identity           no
402                 authority source error      unavailable  registry_unavailable       no
403                 abnormal repeated calls     unavailable  registry_quota_exceeded    no
405 (3-element)     number range not supported  unavailable  phone_unsupported          no
410, 411, 412       not activated, no RAM       unavailable  provider_auth_failed       no
                    permission, arrears
500                 system error                unavailable  registry_unavailable       no
==================  ==========================  ===========  =========================  ========

Gateway errors (HTTP 4xx/5xx, ``Code`` a name): ``InvalidAccessKeyId*``,
``SignatureDoesNotMatch``, ``IncompleteSignature``, ``InvalidTimeStamp*``,
``SignatureNonceUsed``, ``Forbidden*`` -> ``provider_auth_failed``; ``Throttling*`` ->
``registry_rate_limited``; ``InternalError``, ``ServiceUnavailable`` -> ``registry_unavailable``;
``MissingParameter*``, ``InvalidParameter*`` (HTTP 400: our request is malformed) ->
``provider_bad_request``, which is deterministic: it neither counts against the circuit breaker
nor is retried (the verification goes to manual review).
Anything else, or a body not in the documented shape -> ``registry_bad_response``: fail
closed, never passed. Code 400 is not ``invalid_identity``: no field is ever sent empty, so it
means the request itself was not understood, which is not the person's fault.

Transport, retries and the circuit breaker behave as in :mod:`app.verifiers.tencent_faceid`.
Only a UUID ``RequestId`` is kept as the provider reference. The ``attempt_key`` is not sent
(no de-duplication parameter).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final, Literal, Self

import httpx

from app.providers import (
    DEFAULT_TIMEOUT,
    ProviderResponseError,
    ProviderTransportError,
    RetryPolicy,
    aliyun,
    mainland_mobile,
    optional_env,
    read_env,
    safe_code,
    uuid_reference,
)
from app.verifiers.base import CheckOutcome, CheckResult, Subject
from app.verifiers.breaker import CircuitBreaker, call_through

__all__ = [
    "ENV_ACCESS_KEY_ID",
    "ENV_ACCESS_KEY_SECRET",
    "ENV_REGION",
    "AliyunId2MetaVerifier",
    "AliyunMobile3MetaVerifier",
    "cloudauth_endpoint",
]

logger = logging.getLogger(__name__)

ENV_ACCESS_KEY_ID: Final = "REALNAME_ALIYUN_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET: Final = "REALNAME_ALIYUN_ACCESS_KEY_SECRET"  # noqa: S105 (a name)
ENV_REGION: Final = "REALNAME_ALIYUN_REGION"
ENV_SECURITY_TOKEN: Final = "REALNAME_ALIYUN_SECURITY_TOKEN"  # noqa: S105 (a name)
DEFAULT_REGION: Final = "cn-hangzhou"

_VERSION: Final = "2019-03-07"
_REGIONAL_ENDPOINTS: Final = frozenset({"cn-beijing", "cn-shanghai"})

Entry = tuple[CheckOutcome, str | None, bool]
_INVALID: Final[Entry] = (CheckOutcome.FAILED, "invalid_identity", False)
_DOWN: Final[Entry] = (CheckOutcome.UNAVAILABLE, "registry_unavailable", False)
_AUTH: Final[Entry] = (CheckOutcome.UNAVAILABLE, "provider_auth_failed", False)
_BAD: Final[Entry] = (CheckOutcome.UNAVAILABLE, "registry_bad_response", False)

_BAD_REQUEST: Final[Entry] = (CheckOutcome.UNAVAILABLE, "provider_bad_request", False)

_CODES: Final[Mapping[str, Entry]] = {
    "400": _BAD_REQUEST,
    "401": _INVALID,
    "402": _DOWN,
    "403": (CheckOutcome.UNAVAILABLE, "registry_quota_exceeded", False),
    "410": _AUTH,
    "411": _AUTH,
    "412": _AUTH,
    "500": _DOWN,
    "InternalError": _DOWN,
    "ServiceUnavailable": _DOWN,
    "SignatureDoesNotMatch": _AUTH,
    "IncompleteSignature": _AUTH,
    "SignatureNonceUsed": _AUTH,
}
# Gateway error-code prefixes, first match wins.
_PREFIXES: Final[tuple[tuple[str, Entry], ...]] = (
    ("InvalidAccessKeyId", _AUTH),
    ("InvalidTimeStamp", _AUTH),
    ("Forbidden", _AUTH),
    ("Throttling", (CheckOutcome.UNAVAILABLE, "registry_rate_limited", False)),
    ("MissingParameter", _BAD_REQUEST),
    ("InvalidParameter", _BAD_REQUEST),
)


def cloudauth_endpoint(region: str) -> str:
    """The documented cloudauth endpoint for ``region`` (central unless Beijing or Shanghai)."""
    if region in _REGIONAL_ENDPOINTS:
        return f"cloudauth.{region}.aliyuncs.com"
    return "cloudauth.aliyuncs.com"


def _build(entry: Entry, reference: str | None) -> CheckResult:
    outcome, reason, billable = entry
    if outcome is CheckOutcome.PASSED:
        return CheckResult.passed(billable=billable, provider_reference=reference)
    if outcome is CheckOutcome.FAILED:
        assert reason is not None
        return CheckResult.failed(reason, billable=billable, provider_reference=reference)
    assert reason is not None
    return CheckResult.unavailable(reason, provider_reference=reference)


def _as_code(value: object) -> str | None:
    """``Code``/``BizCode`` as a string: the documentation types them as strings, shows numbers."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return safe_code(value)


def _md5(value: str) -> str:
    # The provider's documented hashed-input format, not a security primitive.
    return hashlib.md5(value.encode("utf-8"), usedforsecurity=False).hexdigest()


class _AliyunCloudauthVerifier:
    """Shared body of the cloudauth verifiers; see the module docstring."""

    name: ClassVar[str]
    check_type: ClassVar[str]
    sandbox: ClassVar[bool] = False
    _action: ClassVar[str]
    _biz_codes: ClassVar[Mapping[str, Entry]]
    _extra_codes: ClassVar[Mapping[str, Entry]] = {}

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        access_key_id: str,
        access_key_secret: str,
        security_token: str | None = None,
        region: str = DEFAULT_REGION,
        endpoint: str | None = None,
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        scheme: str = "https",
    ) -> None:
        if not access_key_id or not access_key_secret:
            raise ValueError("access_key_id and access_key_secret must not be empty")
        self._client = client
        self._access_key_id = access_key_id
        self._access_key_secret = access_key_secret
        self._security_token = security_token
        self._host = endpoint or cloudauth_endpoint(region)
        self._retry = RetryPolicy(max_attempts, backoff_base, sleep)
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._clock = clock
        self._timeout = timeout
        self._scheme = scheme

    @classmethod
    def from_env(cls, client: httpx.AsyncClient, env: Mapping[str, str]) -> Self:
        """Build from the variables listed in the module docstring.

        Raises:
            ValueError: naming the missing variables (never their values).
        """
        values = read_env(
            env,
            [ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_REGION],
            {ENV_REGION: DEFAULT_REGION},
        )
        return cls(
            client,
            access_key_id=values[ENV_ACCESS_KEY_ID],
            access_key_secret=values[ENV_ACCESS_KEY_SECRET],
            region=values[ENV_REGION],
            security_token=optional_env(env, ENV_SECURITY_TOKEN),
        )

    def _params(self, subject: Subject) -> dict[str, str] | None:
        return {
            "ParamType": "normal",
            "IdentifyNum": subject.id_number,
            "UserName": subject.real_name,
        }

    async def check(self, subject: Subject, *, attempt_key: str) -> CheckResult:
        """Ask cloudauth, with retries, back-off and the circuit breaker.

        Args:
            subject: The canonical identity fields; sent in the form body only.
            attempt_key: Not sent (cloudauth has no de-duplication parameter).

        Returns:
            The result mapped as in the module docstring, or ``unavailable`` / ``circuit_open``.

        Raises:
            httpx.HTTPError: a non-retriable transport problem (a configuration error).
        """
        params = self._params(subject)
        if params is None:
            return CheckResult.unavailable("phone_unsupported")
        answer = await call_through(self.breaker, lambda: self._ask(params), lambda a: a[0])
        if answer is None:
            return CheckResult.unavailable("circuit_open")
        result, code = answer
        logger.info(
            "aliyun cloudauth check finished",
            extra={
                "verifier": self.name,
                "outcome": result.outcome.value,
                "reason": result.reason,
                "provider_code": code,
            },
        )
        return result

    async def _ask(self, params: dict[str, str]) -> tuple[CheckResult, str | None]:
        try:
            body = await self._retry.run(lambda: self._call(params))
        except ProviderTransportError as exc:
            return CheckResult.unavailable("registry_unavailable"), exc.reason
        except ProviderResponseError:
            return CheckResult.unavailable("registry_bad_response"), None
        reference = uuid_reference(body.get("RequestId"))
        code = _as_code(body.get("Code"))
        if code == "200":
            result = body.get("ResultObject")
            biz = _as_code(result.get("BizCode")) if isinstance(result, dict) else None
            return _build(self._biz_codes.get(biz or "", _BAD), reference), code
        return _build(self._code_entry(code), reference), code

    def _code_entry(self, code: str | None) -> Entry:
        if code is None:
            return _BAD
        entry = self._extra_codes.get(code) or _CODES.get(code)
        if entry is not None:
            return entry
        for prefix, prefixed in _PREFIXES:
            if code == prefix or code.startswith(prefix + "."):
                return prefixed
        return _BAD

    def _call(self, params: dict[str, str]) -> Awaitable[dict[str, Any]]:
        return aliyun.call(
            self._client,
            host=self._host,
            action=self._action,
            version=_VERSION,
            params=params,
            access_key_id=self._access_key_id,
            access_key_secret=self._access_key_secret,
            security_token=self._security_token,
            clock=self._clock,
            request_timeout=self._timeout,
            scheme=self._scheme,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self._host!r}, breaker={self.breaker!r})"


class AliyunId2MetaVerifier(_AliyunCloudauthVerifier):
    """Name + ID number check with cloudauth ``Id2MetaVerify``.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        access_key_id: The AccessKey ID.
        access_key_secret: The AccessKey secret.
        security_token: The STS security token, with temporary credentials.
        region: Chooses the endpoint (see the module docstring); ``cn-hangzhou`` by default.
        endpoint: An explicit endpoint host, overriding ``region``.
        max_attempts: Calls in all, retries included (at least 1).
        backoff_base: Seconds; see :class:`~app.providers.RetryPolicy`.
        breaker: The circuit breaker; a new ``CircuitBreaker()`` if ``None``.
        sleep: Awaited for back-off delays; tests inject a fake.
        clock: Current Unix time for ``x-acs-date``; tests inject a fake.
        timeout: Per-request timeouts.
        scheme: ``"https"``; tests may use ``"http"``.

    Raises:
        ValueError: empty credentials, ``max_attempts`` < 1 or ``backoff_base`` < 0.
    """

    name: ClassVar[str] = "aliyun_id2meta"
    check_type: ClassVar[str] = "id_registry"
    _action: ClassVar[str] = "Id2MetaVerify"
    _biz_codes: ClassVar[Mapping[str, Entry]] = {
        "1": (CheckOutcome.PASSED, None, True),
        "2": (CheckOutcome.FAILED, "id_mismatch", True),
        "3": (CheckOutcome.FAILED, "id_not_found", False),
    }


class AliyunMobile3MetaVerifier(_AliyunCloudauthVerifier):
    """Name + ID number + mainland mobile check with cloudauth ``Mobile3MetaSimpleVerify``.

    Constructed like :class:`AliyunId2MetaVerifier`, plus ``param_type``: ``"md5"`` (default,
    every field hashed) or ``"normal"`` (plain text).
    """

    name: ClassVar[str] = "aliyun_mobile3meta"
    check_type: ClassVar[str] = "carrier_3e"
    _action: ClassVar[str] = "Mobile3MetaSimpleVerify"
    _biz_codes: ClassVar[Mapping[str, Entry]] = {
        "1": (CheckOutcome.PASSED, None, True),
        "2": (CheckOutcome.FAILED, "phone_mismatch", True),
        "3": (CheckOutcome.FAILED, "id_not_found", False),
    }
    _extra_codes: ClassVar[Mapping[str, Entry]] = {
        "405": (CheckOutcome.UNAVAILABLE, "phone_unsupported", False),
    }

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        param_type: Literal["md5", "normal"] = "md5",
        **kwargs: Any,
    ) -> None:
        if param_type not in ("md5", "normal"):
            raise ValueError("param_type must be 'md5' or 'normal'")
        super().__init__(client, **kwargs)
        self._param_type = param_type

    def _params(self, subject: Subject) -> dict[str, str] | None:
        phone = mainland_mobile(subject.phone)
        if phone is None:
            return None
        fields = {"IdentifyNum": subject.id_number, "UserName": subject.real_name, "Mobile": phone}
        if self._param_type == "md5":
            fields = {key: _md5(value) for key, value in fields.items()}
        return {"ParamType": self._param_type, **fields}
