"""A sender for Alibaba Cloud Short Message Service, ``dysmsapi`` ``SendSms`` (2017-05-25).

One :meth:`AliyunSmsSender.send` makes one ACS3-signed ``POST`` to ``dysmsapi.aliyuncs.com``
(:mod:`app.providers.aliyun`) with every parameter in the URL query and an empty body, exactly as
the official client does: ``aliyun/alibabacloud-python-sdk``,
``dysmsapi-20170525/alibabacloud_dysmsapi20170525/client.py``, ``send_sms_with_options`` puts
``OutId``, ``PhoneNumbers``, ``SignName``, ``TemplateCode`` and ``TemplateParam`` into ``query``
(``OpenApiRequest(query=OpenApiUtilClient.query(query))``, ``style='RPC'``, ``method='POST'``) and
sends no body. The query travels only over TLS to the provider; the service never logs that URL
(:mod:`app.providers.aliyun`). The outbox worker owns retries.
``PhoneNumbers`` is the 11-digit national number for mainland mobiles and country code +
number (no ``+``) otherwise, as the API documents. ``TemplateParam`` is the JSON object
``{"code": "<code>"}`` for a template such as ``您的验证码为${code}``; ``OutId`` is the
``message_id`` (returned in delivery receipts, never personal data).

Environment (:meth:`AliyunSmsSender.from_env`)
----------------------------------------------
``REALNAME_ALIYUN_ACCESS_KEY_ID``, ``REALNAME_ALIYUN_ACCESS_KEY_SECRET``,
``REALNAME_ALIYUN_SMS_SIGN_NAME``, ``REALNAME_ALIYUN_SMS_TEMPLATE_CODE`` (required);
``REALNAME_ALIYUN_SECURITY_TOKEN`` (optional: STS credentials, sent as ``x-acs-security-token``).
``REALNAME_ALIYUN_REGION`` is not read: SendSms is served by the central endpoint.

Outcomes
--------
``Code`` -> :class:`~app.senders.base.SendResult`:

* ``OK``: delivered; the ``BizId`` is the provider reference.
* Not retriable, ``provider_rate_limited``: ``isv.BUSINESS_LIMIT_CONTROL`` (per-number caps).
* Not retriable, ``provider_quota_exceeded``: ``isv.DAY_LIMIT_CONTROL``,
  ``isv.MONTH_LIMIT_CONTROL``, ``isv.AMOUNT_NOT_ENOUGH``, ``isv.OUT_OF_SERVICE`` (arrears).
* Retriable, ``provider_throttled``: ``Throttling*`` (API QPS throttling).
* Retriable, ``provider_unavailable``: ``isp.SYSTEM_ERROR``, ``InternalError``,
  ``ServiceUnavailable``; a network error or HTTP 502/503/504.
* Retriable, ``timeout``: no connection could be had in time (the request was not sent).
* Not retriable, ``delivery_unknown``: the request was sent but no answer came (a read timed out,
  the connection broke). SendSms has no de-duplication key, so a retry could deliver twice or be
  refused as a per-number limit although the first message arrived: the worker records the job
  as delivery unknown and the verification offers a resend instead.
* Retriable, ``provider_bad_response``: a body not in the documented shape.
* Not retriable, ``provider_auth_failed``: ``isp.RAM_PERMISSION_DENY``, ``isv.ACCOUNT_*``,
  ``isv.PRODUCT_UN*``, ``InvalidAccessKeyId*``, ``SignatureDoesNotMatch``,
  ``IncompleteSignature``, ``InvalidTimeStamp*``, ``SignatureNonceUsed``, ``Forbidden*``.
* Not retriable, ``invalid_recipient``: ``isv.MOBILE_NUMBER_ILLEGAL``,
  ``isv.BLACK_KEY_CONTROL_LIMIT``, or a phone that is not E.164 (nothing is sent).
* Not retriable, ``provider_rejected``: any other code (signature, template, content, ...).

``isv.BUSINESS_LIMIT_CONTROL`` is Alibaba's per-number cap for verification codes (1/min, 5/h,
10/day with the same signature) and is not retried, for the reasons given in
:mod:`app.senders.tencent_sms`: back-off cannot outlast it and a late OTP is useless.

The circuit breaker behaves as in :mod:`app.senders.tencent_sms` (``circuit_open``, retriable).

Only a ``BizId`` that is 1-128 visible ASCII characters and contains neither the recipient's
digits nor the code is kept. Logs carry ``message_id``, reason and provider code only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Self, Unpack

import httpx

from app.providers import aliyun, mainland_mobile, safe_code
from app.providers.aliyun import AliyunAdapter
from app.providers.base import AdapterOptions, CodeTable
from app.senders._results import SmsOutcomes
from app.senders.base import OutgoingSms, SendResult

__all__ = ["AliyunSmsSender"]

logger = logging.getLogger(__name__)
_OUTCOMES = SmsOutcomes(logger, "aliyun sms")

ENV_SIGN_NAME: Final = "REALNAME_ALIYUN_SMS_SIGN_NAME"
ENV_TEMPLATE_CODE: Final = "REALNAME_ALIYUN_SMS_TEMPLATE_CODE"

_HOST: Final = "dysmsapi.aliyuncs.com"
_E164: Final = re.compile(r"\+([1-9][0-9]{6,14})")
_QUOTA: Final = ("provider_quota_exceeded", False)
_UNAVAILABLE: Final = ("provider_unavailable", True)
_AUTH: Final = ("provider_auth_failed", False)
_INVALID_RECIPIENT: Final = ("invalid_recipient", False)

#: ``(reason, retriable)`` for a failed ``Code``; see the module docstring.
_OUTCOME: Final = CodeTable(
    ("provider_rejected", False),
    {
        "isv.BUSINESS_LIMIT_CONTROL": ("provider_rate_limited", False),
        "isv.DAY_LIMIT_CONTROL": _QUOTA,
        "isv.MONTH_LIMIT_CONTROL": _QUOTA,
        "isv.AMOUNT_NOT_ENOUGH": _QUOTA,
        "isv.OUT_OF_SERVICE": _QUOTA,
        "isp.SYSTEM_ERROR": _UNAVAILABLE,
        "InternalError": _UNAVAILABLE,
        "ServiceUnavailable": _UNAVAILABLE,
        "isp.RAM_PERMISSION_DENY": _AUTH,
        "SignatureDoesNotMatch": _AUTH,
        "IncompleteSignature": _AUTH,
        "SignatureNonceUsed": _AUTH,
        "isv.MOBILE_NUMBER_ILLEGAL": _INVALID_RECIPIENT,
        "isv.BLACK_KEY_CONTROL_LIMIT": _INVALID_RECIPIENT,
    },
    prefixes=(
        ("Throttling", ("provider_throttled", True)),
        ("isv.ACCOUNT_", _AUTH),
        ("isv.PRODUCT_UN", _AUTH),
        ("InvalidAccessKeyId", _AUTH),
        ("InvalidTimeStamp", _AUTH),
        ("Forbidden", _AUTH),
    ),
)


def _phone_numbers(phone: str) -> str | None:
    national = mainland_mobile(phone)
    if national is not None:
        return national
    match = _E164.fullmatch(phone)
    return match.group(1) if match else None


class AliyunSmsSender(AliyunAdapter):
    """Delivers SMS through Alibaba Cloud ``SendSms``; see the module docstring.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        access_key_id: The AccessKey ID.
        access_key_secret: The AccessKey secret.
        sign_name: The approved signature (``SignName``).
        template_code: The approved template (``TemplateCode``) with a ``${code}`` variable.
        security_token: The STS security token, with temporary credentials.
        endpoint: The API host, ``dysmsapi.aliyuncs.com`` by default.
        **options: ``breaker``, ``clock`` (for ``x-acs-date``), ``timeout``, ``scheme``; see
            :class:`~app.providers.base.ProviderAdapter`. No retries: the worker owns them.

    Raises:
        ValueError: an empty credential or setting.
    """

    name: ClassVar[str] = "aliyun_sms"
    sandbox: ClassVar[bool] = False

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        access_key_id: str,
        access_key_secret: str,
        sign_name: str,
        template_code: str,
        security_token: str | None = None,
        endpoint: str = _HOST,
        **options: Unpack[AdapterOptions],
    ) -> None:
        if not all((sign_name, template_code)):
            raise ValueError("credentials and SMS settings must not be empty")
        super().__init__(
            client,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            security_token=security_token,
            host=endpoint,
            **options,
        )
        self._sign_name = sign_name
        self._template_code = template_code

    @classmethod
    def from_env(cls, client: httpx.AsyncClient, env: Mapping[str, str]) -> Self:
        """Build from the variables listed in the module docstring.

        Raises:
            ValueError: naming the missing variables (never their values).
        """
        credentials, values = aliyun.credentials_from_env(env, [ENV_SIGN_NAME, ENV_TEMPLATE_CODE])
        return cls(
            client,
            **credentials,
            sign_name=values[ENV_SIGN_NAME],
            template_code=values[ENV_TEMPLATE_CODE],
        )

    async def send(self, message: OutgoingSms) -> SendResult:
        """Call ``SendSms`` once for ``message`` and map the answer.

        Args:
            message: The SMS; ``params`` must hold ``code``.

        Returns:
            The :class:`~app.senders.base.SendResult` (see the module docstring).

        Raises:
            KeyError: ``message.params`` lacks ``code``; nothing is sent.
            httpx.HTTPError: a non-retriable transport problem (a configuration error).
        """
        code_param = message.params["code"]
        phone_numbers = _phone_numbers(message.phone)
        if phone_numbers is None:
            return _OUTCOMES.failed(message, None, "invalid_recipient", retriable=False)
        params = {
            "PhoneNumbers": phone_numbers,
            "SignName": self._sign_name,
            "TemplateCode": self._template_code,
            "TemplateParam": json.dumps({"code": code_param}, separators=(",", ":")),
            "OutId": message.message_id,
        }
        return await _OUTCOMES.send(
            self.breaker,
            message,
            lambda: self.signed_call(
                action="SendSms", version="2017-05-25", params=params, params_in="query"
            ),
            _map,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self._host!r})"


def _map(message: OutgoingSms, body: dict[str, Any]) -> SendResult:
    code = safe_code(body.get("Code"))
    if code is None:
        return _OUTCOMES.bad_response(message)
    if code == "OK":
        return _OUTCOMES.accepted(message, code, body.get("BizId"))
    reason, retriable = _OUTCOME(code)
    return _OUTCOMES.failed(message, code, reason, retriable=retriable)
