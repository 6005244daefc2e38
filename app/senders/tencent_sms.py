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

Only a ``SerialNo`` that is 1-128 visible ASCII characters and contains neither the recipient's
digits nor a parameter value is kept. Logs carry ``message_id``, reason and provider code only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Self

import httpx

from app.providers import (
    DEFAULT_TIMEOUT,
    ProviderResponseError,
    ProviderTransportError,
    optional_env,
    read_env,
    safe_code,
    tencent,
)
from app.senders._results import SmsOutcomes
from app.senders.base import OutgoingSms, SendResult

__all__ = ["TencentSmsSender"]

logger = logging.getLogger(__name__)
_OUTCOMES = SmsOutcomes(logger, "tencent sms")

ENV_SECRET_ID: Final = "REALNAME_TENCENT_SECRET_ID"  # noqa: S105 (a name)
ENV_SECRET_KEY: Final = "REALNAME_TENCENT_SECRET_KEY"  # noqa: S105 (a name)
ENV_TOKEN: Final = "REALNAME_TENCENT_TOKEN"  # noqa: S105 (a name)
ENV_REGION: Final = "REALNAME_TENCENT_REGION"
ENV_SDK_APP_ID: Final = "REALNAME_TENCENT_SMS_SDK_APP_ID"
ENV_SIGN_NAME: Final = "REALNAME_TENCENT_SMS_SIGN_NAME"
ENV_TEMPLATE_ID: Final = "REALNAME_TENCENT_SMS_TEMPLATE_ID"
DEFAULT_REGION: Final = "ap-guangzhou"

_HOST: Final = "sms.tencentcloudapi.com"
_TRANSIENT_INTERNAL: Final = frozenset(
    {
        "InternalError",
        "InternalError.Timeout",
        "InternalError.SendAndRecvFail",
        "InternalError.OtherError",
        "InternalError.UnknownError",
    }
)
#: The per-number frequency caps of the SendSms error-code table (an exact list: a prefix match
#: would also catch ``LimitExceeded.PhoneNumberCountLimit``, which is a malformed request).
_PER_NUMBER_LIMITS: Final = frozenset(
    {
        "LimitExceeded.PhoneNumberDailyLimit",
        "LimitExceeded.PhoneNumberOneHourLimit",
        "LimitExceeded.PhoneNumberSameContentDailyLimit",
        "LimitExceeded.PhoneNumberThirtySecondLimit",
        "LimitExceeded.DeliveryFrequencyLimit",
    }
)
#: More than 200 numbers in one request: our request is wrong, no cap was reached.
_MALFORMED: Final = frozenset({"LimitExceeded.PhoneNumberCountLimit"})
_INVALID_RECIPIENT: Final = frozenset(
    {"InvalidParameterValue.IncorrectPhoneNumber", "FailedOperation.PhoneNumberInBlacklist"}
)


def _outcome(code: str) -> tuple[str, bool]:
    """``(reason, retriable)`` for a failed ``code``; see the module docstring."""
    if code in _PER_NUMBER_LIMITS:
        return "provider_rate_limited", False
    if code in _MALFORMED:
        return "provider_rejected", False
    if code == "LimitExceeded" or code.startswith("LimitExceeded."):
        return "provider_quota_exceeded", False
    if code == "RequestLimitExceeded" or code.startswith("RequestLimitExceeded."):
        return "provider_throttled", True
    if code in _TRANSIENT_INTERNAL:
        return "provider_unavailable", True
    if code.split(".", 1)[0] in {"AuthFailure", "UnauthorizedOperation"}:
        return "provider_auth_failed", False
    if code in _INVALID_RECIPIENT:
        return "invalid_recipient", False
    return "provider_rejected", False


class TencentSmsSender:
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
        clock: Current Unix time for ``X-TC-Timestamp``; tests inject a fake.
        timeout: Per-request timeouts.
        scheme: ``"https"``; tests may use ``"http"``.

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
        clock: Callable[[], float] = time.time,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        scheme: str = "https",
    ) -> None:
        if not all((secret_id, secret_key, sdk_app_id, sign_name, template_id, region)):
            raise ValueError("credentials and SMS settings must not be empty")
        self._client = client
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._token = token
        self._sdk_app_id = sdk_app_id
        self._sign_name = sign_name
        self._template_id = template_id
        self._region = region
        self._host = host
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
            [
                ENV_SECRET_ID,
                ENV_SECRET_KEY,
                ENV_SDK_APP_ID,
                ENV_SIGN_NAME,
                ENV_TEMPLATE_ID,
                ENV_REGION,
            ],
            {ENV_REGION: DEFAULT_REGION},
        )
        return cls(
            client,
            secret_id=values[ENV_SECRET_ID],
            secret_key=values[ENV_SECRET_KEY],
            sdk_app_id=values[ENV_SDK_APP_ID],
            sign_name=values[ENV_SIGN_NAME],
            template_id=values[ENV_TEMPLATE_ID],
            region=values[ENV_REGION],
            token=optional_env(env, ENV_TOKEN),
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
        try:
            response = await tencent.call(
                self._client,
                host=self._host,
                service="sms",
                action="SendSms",
                version="2021-01-11",
                region=self._region,
                payload=payload,
                secret_id=self._secret_id,
                secret_key=self._secret_key,
                token=self._token,
                clock=self._clock,
                request_timeout=self._timeout,
                scheme=self._scheme,
            )
        except ProviderTransportError as exc:
            return _OUTCOMES.transport_failed(message, exc)
        except ProviderResponseError:
            return _OUTCOMES.bad_response(message)
        return self._map(message, response)

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
        reason, retriable = _outcome(code)
        return _OUTCOMES.failed(message, code, reason, retriable=retriable)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self._host!r}, region={self._region!r})"
