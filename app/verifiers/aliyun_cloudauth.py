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

Transport, retries and the circuit breaker behave as in :mod:`app.verifiers.tencent_faceid`
(:mod:`app.verifiers.cloud`).
Only a UUID ``RequestId`` is kept as the provider reference. The ``attempt_key`` is not sent
(no de-duplication parameter).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal, Self, Unpack

import httpx

from app.providers import aliyun, mainland_mobile, safe_code, uuid_reference
from app.providers.aliyun import (
    ENV_ACCESS_KEY_ID,
    ENV_ACCESS_KEY_SECRET,
    ENV_REGION,
    ENV_SECURITY_TOKEN,
    AliyunAdapter,
)
from app.providers.base import AdapterOptions, CodeTable
from app.verifiers.base import CheckOutcome, CheckResult, Subject
from app.verifiers.cloud import BAD_RESPONSE, CloudCheck, Entry

__all__ = [
    "ENV_ACCESS_KEY_ID",
    "ENV_ACCESS_KEY_SECRET",
    "ENV_REGION",
    "ENV_SECURITY_TOKEN",
    "AliyunId2MetaVerifier",
    "AliyunMobile3MetaVerifier",
    "cloudauth_endpoint",
]

DEFAULT_REGION: Final = "cn-hangzhou"

_VERSION: Final = "2019-03-07"
_REGIONAL_ENDPOINTS: Final = frozenset({"cn-beijing", "cn-shanghai"})

_INVALID: Final = Entry(CheckOutcome.FAILED, "invalid_identity")
_DOWN: Final = Entry(CheckOutcome.UNAVAILABLE, "registry_unavailable")
_AUTH: Final = Entry(CheckOutcome.UNAVAILABLE, "provider_auth_failed")
_BAD_REQUEST: Final = Entry(CheckOutcome.UNAVAILABLE, "provider_bad_request")

#: ``Code`` other than 200: the documented numeric codes, then the gateway's error names (exact,
#: or by family: ``InvalidAccessKeyId.NotFound``, ``Throttling.User``, ...).
_CODES: Final = CodeTable(
    BAD_RESPONSE,
    {
        "400": _BAD_REQUEST,
        "401": _INVALID,
        "402": _DOWN,
        "403": Entry(CheckOutcome.UNAVAILABLE, "registry_quota_exceeded"),
        "410": _AUTH,
        "411": _AUTH,
        "412": _AUTH,
        "500": _DOWN,
        "InternalError": _DOWN,
        "ServiceUnavailable": _DOWN,
        "SignatureDoesNotMatch": _AUTH,
        "IncompleteSignature": _AUTH,
        "SignatureNonceUsed": _AUTH,
    },
    families={
        "InvalidAccessKeyId": _AUTH,
        "InvalidTimeStamp": _AUTH,
        "Forbidden": _AUTH,
        "Throttling": Entry(CheckOutcome.UNAVAILABLE, "registry_rate_limited"),
        "MissingParameter": _BAD_REQUEST,
        "InvalidParameter": _BAD_REQUEST,
    },
)


def cloudauth_endpoint(region: str) -> str:
    """The documented cloudauth endpoint for ``region`` (central unless Beijing or Shanghai)."""
    if region in _REGIONAL_ENDPOINTS:
        return f"cloudauth.{region}.aliyuncs.com"
    return "cloudauth.aliyuncs.com"


def _as_code(value: object) -> str | None:
    """``Code``/``BizCode`` as a string: the documentation types them as strings, shows numbers."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return safe_code(value)


def _md5(value: str) -> str:
    # The provider's documented hashed-input format, not a security primitive.
    return hashlib.md5(value.encode("utf-8"), usedforsecurity=False).hexdigest()


class _AliyunCloudauthVerifier(CloudCheck, AliyunAdapter):
    """Shared body of the cloudauth verifiers; see the module docstring."""

    _label: ClassVar[str] = "aliyun cloudauth"
    _action: ClassVar[str]
    _biz_codes: ClassVar[CodeTable[Entry]]
    _codes: ClassVar[CodeTable[Entry]] = _CODES

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
        **options: Unpack[AdapterOptions],
    ) -> None:
        super().__init__(
            client,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            security_token=security_token,
            host=endpoint or cloudauth_endpoint(region),
            max_attempts=max_attempts,
            **options,
        )

    @classmethod
    def from_env(cls, client: httpx.AsyncClient, env: Mapping[str, str]) -> Self:
        """Build from the variables listed in the module docstring.

        Raises:
            ValueError: naming the missing variables (never their values).
        """
        credentials, values = aliyun.credentials_from_env(
            env, [ENV_REGION], {ENV_REGION: DEFAULT_REGION}
        )
        return cls(client, **credentials, region=values[ENV_REGION])

    def _request(self, subject: Subject) -> dict[str, str] | None:
        return {
            "ParamType": "normal",
            "IdentifyNum": subject.id_number,
            "UserName": subject.real_name,
        }

    async def _ask(self, request: dict[str, str]) -> dict[str, Any]:
        return await self.signed_call(action=self._action, version=_VERSION, params=request)

    def _map(self, answer: dict[str, Any]) -> tuple[CheckResult, str | None]:
        reference = uuid_reference(answer.get("RequestId"))
        code = _as_code(answer.get("Code"))
        if code == "200":
            result = answer.get("ResultObject")
            biz = _as_code(result.get("BizCode")) if isinstance(result, dict) else None
            return self._biz_codes(biz).result(reference), code
        return self._codes(code).result(reference), code


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
        **options: ``backoff_base``, ``breaker``, ``sleep``, ``clock`` (for ``x-acs-date``),
            ``timeout``, ``scheme``; see :class:`~app.providers.base.ProviderAdapter`.

    Raises:
        ValueError: empty credentials, ``max_attempts`` < 1 or ``backoff_base`` < 0.
    """

    name: ClassVar[str] = "aliyun_id2meta"
    check_type: ClassVar[str] = "id_registry"
    _action: ClassVar[str] = "Id2MetaVerify"
    _biz_codes: ClassVar[CodeTable[Entry]] = CodeTable(
        BAD_RESPONSE,
        {
            "1": Entry(CheckOutcome.PASSED, None, True),
            "2": Entry(CheckOutcome.FAILED, "id_mismatch", True),
            "3": Entry(CheckOutcome.FAILED, "id_not_found"),
        },
    )


class AliyunMobile3MetaVerifier(_AliyunCloudauthVerifier):
    """Name + ID number + mainland mobile check with cloudauth ``Mobile3MetaSimpleVerify``.

    Constructed like :class:`AliyunId2MetaVerifier`, plus ``param_type``: ``"md5"`` (default,
    every field hashed) or ``"normal"`` (plain text).
    """

    name: ClassVar[str] = "aliyun_mobile3meta"
    check_type: ClassVar[str] = "carrier_3e"
    _action: ClassVar[str] = "Mobile3MetaSimpleVerify"
    _biz_codes: ClassVar[CodeTable[Entry]] = CodeTable(
        BAD_RESPONSE,
        {
            "1": Entry(CheckOutcome.PASSED, None, True),
            "2": Entry(CheckOutcome.FAILED, "phone_mismatch", True),
            "3": Entry(CheckOutcome.FAILED, "id_not_found"),
        },
    )
    _codes: ClassVar[CodeTable[Entry]] = _CODES.extended(
        {"405": Entry(CheckOutcome.UNAVAILABLE, "phone_unsupported")}
    )

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

    def _request(self, subject: Subject) -> dict[str, str] | None:
        phone = mainland_mobile(subject.phone)
        if phone is None:
            return None
        fields = {"IdentifyNum": subject.id_number, "UserName": subject.real_name, "Mobile": phone}
        if self._param_type == "md5":
            fields = {key: _md5(value) for key, value in fields.items()}
        return {"ParamType": self._param_type, **fields}
