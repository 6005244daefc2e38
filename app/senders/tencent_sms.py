"""A sender for Tencent Cloud SMS (短信), ``SendSms`` of API version 2021-01-11.

One :meth:`TencentSmsSender.send` makes one TC3-signed call to ``sms.tencentcloudapi.com``
(:mod:`app.providers.tencent`); the outbox worker owns retries. The message goes to one
E.164 number (``PhoneNumberSet``) with a pre-approved template (``TemplateId``) and signature
(``SignName``); the template parameters are ``[code, ttl_minutes]`` from
:attr:`~app.senders.base.OutgoingSms.params`, so the template must have exactly two variables in
that order, e.g. ``验证码{1}, {2}分钟内有效`` ("code {1}, valid for {2} minutes"). The
``message_id`` is sent as ``SessionContext`` (echoed back by Tencent, never personal data).

Environment (:meth:`TencentSmsSender.from_env`)
-----------------------------------------------
``REALNAME_TENCENT_SECRET_ID``, ``REALNAME_TENCENT_SECRET_KEY``,
``REALNAME_TENCENT_SMS_SDK_APP_ID``, ``REALNAME_TENCENT_SMS_SIGN_NAME``,
``REALNAME_TENCENT_SMS_TEMPLATE_ID`` (required); ``REALNAME_TENCENT_REGION`` (default
``ap-guangzhou``; SendSms requires a region); ``REALNAME_TENCENT_TOKEN`` (optional: the session
token of temporary STS credentials, sent as ``X-TC-Token``).

Outcomes
--------
``SendStatusSet[0].Code`` (or ``Response.Error.Code``) -> :class:`~app.senders.base.SendResult`:

* ``Ok``: delivered; the ``SerialNo`` is the provider reference.
* Not retriable, ``provider_rate_limited``: the per-number caps ``LimitExceeded.PhoneNumber``
  ``ThirtySecondLimit``, ``OneHourLimit``, ``DailyLimit``, ``SameContentDailyLimit`` and
  ``LimitExceeded.DeliveryFrequencyLimit``.
* Not retriable, ``provider_rejected``: ``LimitExceeded.PhoneNumberCountLimit`` (more than 200
  numbers in one request: a malformed request, not a rate limit).
* Not retriable, ``provider_quota_exceeded``: any other ``LimitExceeded*`` (app or account caps).
* Retriable, ``provider_throttled``: ``RequestLimitExceeded*`` (API QPS throttling).
* Retriable, ``provider_unavailable``: ``InternalError``, ``InternalError.Timeout``,
  ``.SendAndRecvFail``, ``.OtherError``, ``.UnknownError``; a network error or HTTP 502/503/504.
* Retriable, ``timeout``: no connection could be had in time (the request was not sent).
* Not retriable, ``delivery_unknown``: the request was sent but no answer came (a read timed out,
  the connection broke). SendSms has no de-duplication key, so a retry could deliver twice or be
  refused as a per-number limit although the first message arrived: the worker records the job
  as delivery unknown and the verification offers a resend instead.
* Retriable, ``provider_bad_response``: a body not in the documented shape.
* Not retriable, ``provider_auth_failed``: ``AuthFailure*``, ``UnauthorizedOperation*``.
* Not retriable, ``invalid_recipient``: ``InvalidParameterValue.IncorrectPhoneNumber``,
  ``FailedOperation.PhoneNumberInBlacklist``.
* Not retriable, ``provider_rejected``: any other code (template, signature, content, ...).

Per-number frequency limits are *not* retried: the carrier-side caps (30 s, 1 h, 1 day per
number) outlast the worker's back-off, an OTP delivered late is useless, and the service's own
per-phone limits (1/min, 5/h, 10/day) mirror them, so hitting one means the user should ask for
a new code later. API-level throttling is transient and is retried. A garbled answer is retried
(the message may not have gone out; a duplicate OTP is harmless, a missing one is not).

A circuit breaker (:class:`~app.providers.breaker.CircuitBreaker`) counts the answers that say
the provider is not working (``timeout``, ``provider_unavailable``, ``provider_bad_response``,
``delivery_unknown``); while it is open, sends fail at once as retriable ``circuit_open``
without a request, and the worker tries again later.

Only a ``SerialNo`` that is 1-128 visible ASCII characters and contains neither the recipient's
digits nor a parameter value is kept. Logs carry ``message_id``, reason and provider code only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Self, Unpack

import httpx

from app.providers import safe_code, tencent
from app.providers.base import AdapterOptions, CodeTable
from app.providers.tencent import ENV_REGION, TencentAdapter
from app.senders._results import SmsOutcomes
from app.senders.base import OutgoingSms, SendResult

__all__ = ["TencentSmsSender"]

logger = logging.getLogger(__name__)
_OUTCOMES = SmsOutcomes(logger, "tencent sms")

ENV_SDK_APP_ID: Final = "REALNAME_TENCENT_SMS_SDK_APP_ID"
ENV_SIGN_NAME: Final = "REALNAME_TENCENT_SMS_SIGN_NAME"
ENV_TEMPLATE_ID: Final = "REALNAME_TENCENT_SMS_TEMPLATE_ID"
DEFAULT_REGION: Final = "ap-guangzhou"

_HOST: Final = "sms.tencentcloudapi.com"
_RATE_LIMITED: Final = ("provider_rate_limited", False)
_REJECTED: Final = ("provider_rejected", False)
_UNAVAILABLE: Final = ("provider_unavailable", True)
_AUTH: Final = ("provider_auth_failed", False)
_INVALID_RECIPIENT: Final = ("invalid_recipient", False)

#: ``(reason, retriable)`` for a failed code; see the module docstring. The per-number caps are
#: an exact list: their family would also catch ``LimitExceeded.PhoneNumberCountLimit`` (more
#: than 200 numbers in one request: our request is wrong, no cap was reached).
_OUTCOME: Final = CodeTable(
    _REJECTED,
    {
        "LimitExceeded.PhoneNumberDailyLimit": _RATE_LIMITED,
        "LimitExceeded.PhoneNumberOneHourLimit": _RATE_LIMITED,
        "LimitExceeded.PhoneNumberSameContentDailyLimit": _RATE_LIMITED,
        "LimitExceeded.PhoneNumberThirtySecondLimit": _RATE_LIMITED,
        "LimitExceeded.DeliveryFrequencyLimit": _RATE_LIMITED,
        "LimitExceeded.PhoneNumberCountLimit": _REJECTED,
        "InternalError": _UNAVAILABLE,
        "InternalError.Timeout": _UNAVAILABLE,
        "InternalError.SendAndRecvFail": _UNAVAILABLE,
        "InternalError.OtherError": _UNAVAILABLE,
        "InternalError.UnknownError": _UNAVAILABLE,
        "InvalidParameterValue.IncorrectPhoneNumber": _INVALID_RECIPIENT,
        "FailedOperation.PhoneNumberInBlacklist": _INVALID_RECIPIENT,
    },
    families={
        "LimitExceeded": ("provider_quota_exceeded", False),
        "RequestLimitExceeded": ("provider_throttled", True),
        "AuthFailure": _AUTH,
        "UnauthorizedOperation": _AUTH,
    },
)


class TencentSmsSender(TencentAdapter):
    """Delivers SMS through Tencent Cloud ``SendSms``; see the module docstring.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        secret_id: The Tencent Cloud SecretId.
        secret_key: The Tencent Cloud SecretKey.
        token: The STS session token (``X-TC-Token``), with temporary credentials.
        sdk_app_id: The SMS application's ``SmsSdkAppId``.
        sign_name: The approved signature (``SignName``).
        template_id: The approved template (``TemplateId``) with variables ``{1}`` code and
            ``{2}`` validity in minutes.
        region: ``X-TC-Region``; ``ap-guangzhou`` by default.
        host: The API host, ``sms.tencentcloudapi.com`` by default.
        **options: ``breaker``, ``clock`` (for ``X-TC-Timestamp``), ``timeout``, ``scheme``;
            see :class:`~app.providers.base.ProviderAdapter`. No retries: the worker owns them.

    Raises:
        ValueError: an empty credential or setting.
    """

    name: ClassVar[str] = "tencent_sms"
    sandbox: ClassVar[bool] = False

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        secret_id: str,
        secret_key: str,
        token: str | None = None,
        sdk_app_id: str,
        sign_name: str,
        template_id: str,
        region: str = DEFAULT_REGION,
        host: str = _HOST,
        **options: Unpack[AdapterOptions],
    ) -> None:
        if not all((sdk_app_id, sign_name, template_id, region)):
            raise ValueError("credentials and SMS settings must not be empty")
        super().__init__(
            client, secret_id=secret_id, secret_key=secret_key, token=token, host=host, **options
        )
        self._sdk_app_id = sdk_app_id
        self._sign_name = sign_name
        self._template_id = template_id
        self._region = region

    @classmethod
    def from_env(cls, client: httpx.AsyncClient, env: Mapping[str, str]) -> Self:
        """Build from the variables listed in the module docstring.

        Raises:
            ValueError: naming the missing variables (never their values).
        """
        credentials, values = tencent.credentials_from_env(
            env,
            [ENV_SDK_APP_ID, ENV_SIGN_NAME, ENV_TEMPLATE_ID, ENV_REGION],
            {ENV_REGION: DEFAULT_REGION},
        )
        return cls(
            client,
            **credentials,
            sdk_app_id=values[ENV_SDK_APP_ID],
            sign_name=values[ENV_SIGN_NAME],
            template_id=values[ENV_TEMPLATE_ID],
            region=values[ENV_REGION],
        )

    async def send(self, message: OutgoingSms) -> SendResult:
        """Call ``SendSms`` once for ``message`` and map the answer.

        Args:
            message: The SMS; ``params`` must hold ``code`` and ``ttl_minutes``.

        Returns:
            The :class:`~app.senders.base.SendResult` (see the module docstring).

        Raises:
            KeyError: ``message.params`` lacks ``code`` or ``ttl_minutes``; nothing is sent.
            httpx.HTTPError: a non-retriable transport problem (a configuration error).
        """
        template_params = [message.params["code"], message.params["ttl_minutes"]]
        payload = {
            "PhoneNumberSet": [message.phone],
            "SmsSdkAppId": self._sdk_app_id,
            "TemplateId": self._template_id,
            "SignName": self._sign_name,
            "TemplateParamSet": template_params,
            "SessionContext": message.message_id,
        }
        return await _OUTCOMES.send(
            self.breaker,
            message,
            lambda: self.signed_call(
                service="sms",
                action="SendSms",
                version="2021-01-11",
                region=self._region,
                payload=payload,
            ),
            self._map,
        )

    def _map(self, message: OutgoingSms, response: dict[str, Any]) -> SendResult:
        code = tencent.error_code(response)
        status: object = None
        if code is None:
            statuses = response.get("SendStatusSet")
            if not isinstance(statuses, list) or len(statuses) != 1:
                return _OUTCOMES.bad_response(message)
            status = statuses[0]
            code = safe_code(status.get("Code")) if isinstance(status, dict) else None
            if code is None:
                return _OUTCOMES.bad_response(message)
        if code == "Ok" and isinstance(status, dict):
            return _OUTCOMES.accepted(message, code, status.get("SerialNo"))
        reason, retriable = _OUTCOME(code)
        return _OUTCOMES.failed(message, code, reason, retriable=retriable)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self._host!r}, region={self._region!r})"
