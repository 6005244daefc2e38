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

Only a ``BizId`` that is 1-128 visible ASCII characters and contains neither the recipient's
digits nor the code is kept. Logs carry ``message_id``, reason and provider code only.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import ClassVar, Final, Self

import httpx

from app.providers import (
    DEFAULT_TIMEOUT,
    ProviderResponseError,
    ProviderTransportError,
    aliyun,
    mainland_mobile,
    optional_env,
    read_env,
    safe_code,
)
from app.senders._results import SmsOutcomes
from app.senders.base import OutgoingSms, SendResult

__all__ = ["AliyunSmsSender"]

logger = logging.getLogger(__name__)
_OUTCOMES = SmsOutcomes(logger, "aliyun sms")

ENV_ACCESS_KEY_ID: Final = "REALNAME_ALIYUN_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET: Final = "REALNAME_ALIYUN_ACCESS_KEY_SECRET"  # noqa: S105 (a name)
ENV_SIGN_NAME: Final = "REALNAME_ALIYUN_SMS_SIGN_NAME"
ENV_TEMPLATE_CODE: Final = "REALNAME_ALIYUN_SMS_TEMPLATE_CODE"
ENV_SECURITY_TOKEN: Final = "REALNAME_ALIYUN_SECURITY_TOKEN"  # noqa: S105 (a name)

_HOST: Final = "dysmsapi.aliyuncs.com"
_E164: Final = re.compile(r"\+([1-9][0-9]{6,14})")
_CODES: Final[Mapping[str, tuple[str, bool]]] = {
    "isv.BUSINESS_LIMIT_CONTROL": ("provider_rate_limited", False),
    "isv.DAY_LIMIT_CONTROL": ("provider_quota_exceeded", False),
    "isv.MONTH_LIMIT_CONTROL": ("provider_quota_exceeded", False),
    "isv.AMOUNT_NOT_ENOUGH": ("provider_quota_exceeded", False),
    "isv.OUT_OF_SERVICE": ("provider_quota_exceeded", False),
    "isp.SYSTEM_ERROR": ("provider_unavailable", True),
    "InternalError": ("provider_unavailable", True),
    "ServiceUnavailable": ("provider_unavailable", True),
    "isp.RAM_PERMISSION_DENY": ("provider_auth_failed", False),
    "SignatureDoesNotMatch": ("provider_auth_failed", False),
    "IncompleteSignature": ("provider_auth_failed", False),
    "SignatureNonceUsed": ("provider_auth_failed", False),
    "isv.MOBILE_NUMBER_ILLEGAL": ("invalid_recipient", False),
    "isv.BLACK_KEY_CONTROL_LIMIT": ("invalid_recipient", False),
}
_PREFIXES: Final[tuple[tuple[str, tuple[str, bool]], ...]] = (
    ("Throttling", ("provider_throttled", True)),
    ("isv.ACCOUNT_", ("provider_auth_failed", False)),
    ("isv.PRODUCT_UN", ("provider_auth_failed", False)),
    ("InvalidAccessKeyId", ("provider_auth_failed", False)),
    ("InvalidTimeStamp", ("provider_auth_failed", False)),
    ("Forbidden", ("provider_auth_failed", False)),
)


def _outcome(code: str) -> tuple[str, bool]:
    """``(reason, retriable)`` for a failed ``code``; see the module docstring."""
    if code in _CODES:
        return _CODES[code]
    for prefix, outcome in _PREFIXES:
        if code.startswith(prefix):
            return outcome
    return "provider_rejected", False


def _phone_numbers(phone: str) -> str | None:
    national = mainland_mobile(phone)
    if national is not None:
        return national
    match = _E164.fullmatch(phone)
    return match.group(1) if match else None


class AliyunSmsSender:
    """Delivers SMS through Alibaba Cloud ``SendSms``; see the module docstring.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        access_key_id: The AccessKey ID.
        access_key_secret: The AccessKey secret.
        sign_name: The approved signature (``SignName``).
        template_code: The approved template (``TemplateCode``) with a ``${code}`` variable.
        security_token: The STS security token, with temporary credentials.
        endpoint: The API host, ``dysmsapi.aliyuncs.com`` by default.
        clock: Current Unix time for ``x-acs-date``; tests inject a fake.
        timeout: Per-request timeouts.
        scheme: ``"https"``; tests may use ``"http"``.

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
        clock: Callable[[], float] = time.time,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        scheme: str = "https",
    ) -> None:
        if not all((access_key_id, access_key_secret, sign_name, template_code)):
            raise ValueError("credentials and SMS settings must not be empty")
        self._client = client
        self._access_key_id = access_key_id
        self._access_key_secret = access_key_secret
        self._sign_name = sign_name
        self._template_code = template_code
        self._security_token = security_token
        self._host = endpoint
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
            env, [ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SIGN_NAME, ENV_TEMPLATE_CODE]
        )
        return cls(
            client,
            access_key_id=values[ENV_ACCESS_KEY_ID],
            access_key_secret=values[ENV_ACCESS_KEY_SECRET],
            sign_name=values[ENV_SIGN_NAME],
            template_code=values[ENV_TEMPLATE_CODE],
            security_token=optional_env(env, ENV_SECURITY_TOKEN),
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
        try:
            body = await aliyun.call(
                self._client,
                host=self._host,
                action="SendSms",
                version="2017-05-25",
                params=params,
                access_key_id=self._access_key_id,
                access_key_secret=self._access_key_secret,
                params_in="query",
                security_token=self._security_token,
                clock=self._clock,
                request_timeout=self._timeout,
                scheme=self._scheme,
            )
        except ProviderTransportError as exc:
            return _OUTCOMES.transport_failed(message, exc)
        except ProviderResponseError:
            return _OUTCOMES.bad_response(message)
        code = safe_code(body.get("Code"))
        if code is None:
            return _OUTCOMES.bad_response(message)
        if code == "OK":
            return _OUTCOMES.accepted(message, code, body.get("BizId"))
        reason, retriable = _outcome(code)
        return _OUTCOMES.failed(message, code, reason, retriable=retriable)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self._host!r})"
