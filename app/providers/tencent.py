"""Tencent Cloud API 3.0: ``TC3-HMAC-SHA256`` request signing and one signed JSON ``POST``.

Signing (:func:`sign_tc3`)
--------------------------
As in Tencent Cloud's "Signature v3" documentation, for a request at Unix time ``timestamp``::

    CanonicalRequest = Method + "\\n" + "/" + "\\n" + CanonicalQueryString + "\\n"
                       + CanonicalHeaders + "\\n" + SignedHeaders + "\\n"
                       + hex(SHA256(payload))
    CanonicalHeaders = "content-type:<type>\\nhost:<host>\\n" [+ "x-tc-action:<action>\\n"]
                       (names and values lowercased and trimmed, sorted by name)
    StringToSign     = "TC3-HMAC-SHA256\\n" + timestamp + "\\n" + CredentialScope + "\\n"
                       + hex(SHA256(CanonicalRequest))
    CredentialScope  = Date + "/" + service + "/tc3_request"   (Date: the UTC date of timestamp)
    SecretDate       = HMAC-SHA256("TC3" + SecretKey, Date)
    SecretService    = HMAC-SHA256(SecretDate, service)
    SecretSigning    = HMAC-SHA256(SecretService, "tc3_request")
    Signature        = hex(HMAC-SHA256(SecretSigning, StringToSign))
    Authorization    = "TC3-HMAC-SHA256 Credential=" + SecretId + "/" + CredentialScope
                       + ", SignedHeaders=" + SignedHeaders + ", Signature=" + Signature

The key derivation matches ``Sign.sign_tc3`` of the official Python SDK
(``TencentCloud/tencentcloud-sdk-python``, ``tencentcloud/common/sign.py``). The request also
carries ``X-TC-Action``, ``X-TC-Version``, ``X-TC-Timestamp`` and, when given, ``X-TC-Region`` and
``X-TC-Token`` (the session token of temporary STS credentials; sent, not signed, as the official
SDK's ``AbstractClient`` does).
By default ``x-tc-action`` is signed too (the current documentation's example does so), so a
signed body cannot be replayed against another action; :func:`sign_tc3` can leave it out.
``tests/providers/test_providers_tencent.py`` checks both forms against the documentation's
worked examples, including the current one (CVM ``DescribeInstances`` at 1551113065 with the
masked ``AKID****…`` / ``****…`` credentials: ``Signature=10b1a37a…``).

Calling (:func:`call`)
----------------------
One ``POST https://<host>/`` with a compact JSON body (``Content-Type: application/json;
charset=utf-8``). Personal data travels only in that body. The parsed ``Response`` object is
returned whether or not it holds an ``Error`` (see :func:`error_code`); Tencent answers API
errors with HTTP 200. The server rejects a timestamp more than five minutes from its clock
(``AuthFailure.SignatureExpire``).

Adapters (:class:`TencentAdapter`)
----------------------------------
The base of the FaceID verifiers and the SMS sender: the credentials (from
``REALNAME_TENCENT_SECRET_ID``, ``REALNAME_TENCENT_SECRET_KEY`` and the optional
``REALNAME_TENCENT_TOKEN``, see :func:`credentials_from_env`), the shared adapter options
(:class:`app.providers.base.ProviderAdapter`) and one signed call with retries
(:meth:`TencentAdapter.signed_call`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypedDict, Unpack

import httpx

from app.providers import (
    DEFAULT_TIMEOUT,
    ProviderResponseError,
    json_object,
    post,
    safe_code,
)
from app.providers.base import AdapterOptions, CredentialEnv, Credentials, ProviderAdapter

__all__ = [
    "ALGORITHM",
    "ENV_REGION",
    "ENV_SECRET_ID",
    "ENV_SECRET_KEY",
    "ENV_TOKEN",
    "JSON_CONTENT_TYPE",
    "Tc3Signature",
    "TencentAdapter",
    "TencentCredentials",
    "call",
    "credentials_from_env",
    "error_code",
    "sign_tc3",
]

ENV_SECRET_ID: Final = "REALNAME_TENCENT_SECRET_ID"  # noqa: S105 (a name)
ENV_SECRET_KEY: Final = "REALNAME_TENCENT_SECRET_KEY"  # noqa: S105 (a name)
ENV_TOKEN: Final = "REALNAME_TENCENT_TOKEN"  # noqa: S105 (a name)
ENV_REGION: Final = "REALNAME_TENCENT_REGION"

ALGORITHM: Final = "TC3-HMAC-SHA256"
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
_TERMINATOR: Final = "tc3_request"


@dataclass(frozen=True, slots=True)
class Tc3Signature:
    """A signed request: the headers to send and the intermediate strings (for tests, debugging).

    ``canonical_request`` contains only the payload's hash, never the payload itself.
    """

    canonical_request: str
    string_to_sign: str
    signature: str
    authorization: str
    headers: dict[str, str]


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sign_tc3(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    host: str,
    action: str,
    version: str,
    payload: bytes,
    timestamp: int,
    region: str | None = None,
    content_type: str = JSON_CONTENT_TYPE,
    method: str = "POST",
    canonical_query: str = "",
    sign_action: bool = True,
    token: str | None = None,
) -> Tc3Signature:
    """Sign one API 3.0 request with ``TC3-HMAC-SHA256``; a pure function (see module docstring).

    Args:
        secret_id: The SecretId, sent in the clear in ``Authorization``.
        secret_key: The SecretKey; only used as HMAC key material.
        service: The product, e.g. ``"faceid"``; must match the host's first label.
        host: E.g. ``"faceid.tencentcloudapi.com"``.
        action: E.g. ``"IdCardVerification"`` (``X-TC-Action``).
        version: E.g. ``"2018-03-01"`` (``X-TC-Version``).
        payload: The exact body bytes (empty for ``GET``).
        timestamp: Unix seconds (``X-TC-Timestamp``); the credential date is its UTC date.
        region: ``X-TC-Region``, omitted when ``None``.
        content_type: The ``Content-Type`` that will be sent, byte for byte.
        method: ``"POST"`` or ``"GET"``.
        canonical_query: The URL-encoded query string (``GET`` only).
        sign_action: Whether ``x-tc-action`` is among the signed headers.
        token: ``X-TC-Token`` for temporary (STS) credentials, omitted when ``None``.

    Returns:
        The :class:`Tc3Signature`, whose ``headers`` are everything to send.
    """
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    signed = {"content-type": content_type, "host": host}
    if sign_action:
        signed["x-tc-action"] = action
    names = sorted(signed)
    canonical_headers = "".join(f"{name}:{signed[name].strip().lower()}\n" for name in names)
    signed_headers = ";".join(names)
    canonical_request = "\n".join(
        [
            method,
            "/",
            canonical_query,
            canonical_headers,
            signed_headers,
            _sha256_hex(payload),
        ]
    )
    scope = f"{date}/{service}/{_TERMINATOR}"
    string_to_sign = "\n".join(
        [ALGORITHM, str(timestamp), scope, _sha256_hex(canonical_request.encode("utf-8"))]
    )
    secret_date = _hmac(f"TC3{secret_key}".encode(), date)
    secret_signing = _hmac(_hmac(secret_date, service), _TERMINATOR)
    signature = hmac.new(secret_signing, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    headers = {
        "Authorization": authorization,
        "Content-Type": content_type,
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Version": version,
        "X-TC-Timestamp": str(timestamp),
    }
    if region is not None:
        headers["X-TC-Region"] = region
    if token is not None:
        headers["X-TC-Token"] = token
    return Tc3Signature(canonical_request, string_to_sign, signature, authorization, headers)


async def call(
    client: httpx.AsyncClient,
    *,
    host: str,
    service: str,
    action: str,
    version: str,
    region: str | None,
    payload: Mapping[str, Any],
    secret_id: str,
    secret_key: str,
    token: str | None = None,
    clock: Callable[[], float] = time.time,
    request_timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    scheme: str = "https",
) -> dict[str, Any]:
    """Make one signed API 3.0 call and return its ``Response`` object.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        host: The API host, e.g. ``"sms.tencentcloudapi.com"``.
        service: The signing service, e.g. ``"sms"``.
        action: The API action.
        version: The API version.
        region: ``X-TC-Region``; ``None`` for APIs that take none.
        payload: The request parameters, sent as compact UTF-8 JSON.
        secret_id: The SecretId.
        secret_key: The SecretKey.
        token: The STS session token (``X-TC-Token``), if any.
        clock: Current Unix time; tests inject a fixed one.
        request_timeout: Per-request timeouts.
        scheme: ``"https"``; tests may use ``"http"``.

    Returns:
        The ``Response`` object. It may hold ``Error`` (see :func:`error_code`).

    Raises:
        ProviderTransportError: timeout, network error, or HTTP 502/503/504.
        ProviderResponseError: the body is not a JSON object with an object ``Response``.
    """
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    signed = sign_tc3(
        secret_id=secret_id,
        secret_key=secret_key,
        service=service,
        host=host,
        action=action,
        version=version,
        payload=body,
        timestamp=int(clock()),
        region=region,
        token=token,
    )
    response = await post(
        client,
        f"{scheme}://{host}/",
        content=body,
        headers=signed.headers,
        request_timeout=request_timeout,
    )
    inner = json_object(response).get("Response")
    if not isinstance(inner, dict):
        raise ProviderResponseError(status=response.status_code)
    return inner


def error_code(response: Mapping[str, Any]) -> str | None:
    """The ``Error.Code`` of a ``Response`` object; ``None`` when it holds no ``Error``.

    A malformed ``Error`` gives ``"<malformed>"``, which no code table matches.
    """
    if "Error" not in response:
        return None
    error = response["Error"]
    code = safe_code(error.get("Code")) if isinstance(error, dict) else None
    return code if code is not None else "<malformed>"


class TencentCredentials(TypedDict):
    """The credential keyword arguments of every :class:`TencentAdapter`."""

    secret_id: str
    secret_key: str
    token: str | None


_ENV: Final = CredentialEnv(ENV_SECRET_ID, ENV_SECRET_KEY, ENV_TOKEN)


def credentials_from_env(
    env: Mapping[str, str], also: Sequence[str] = (), defaults: Mapping[str, str] | None = None
) -> tuple[TencentCredentials, dict[str, str]]:
    """The credentials as keyword arguments, and the values of the adapter's own variables
    ``also`` (see :meth:`~app.providers.base.CredentialEnv.read`)."""
    credentials, values = _ENV.read(env, also, defaults)
    return (
        TencentCredentials(
            secret_id=credentials.key_id, secret_key=credentials.secret, token=credentials.token
        ),
        values,
    )


class TencentAdapter(ProviderAdapter):
    """The base of the adapters that call Tencent Cloud API 3.0.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        secret_id: The Tencent Cloud SecretId.
        secret_key: The Tencent Cloud SecretKey.
        token: The STS session token (``X-TC-Token``), with temporary credentials.
        host: The API host.
        max_attempts: Calls in all, retries of transport errors included; 1 for senders.
        **options: See :class:`~app.providers.base.ProviderAdapter`.

    Raises:
        ValueError: empty credentials, or an option out of range.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        secret_id: str,
        secret_key: str,
        token: str | None = None,
        host: str,
        max_attempts: int = 1,
        **options: Unpack[AdapterOptions],
    ) -> None:
        super().__init__(
            client,
            credentials=Credentials(secret_id, secret_key, token),
            host=host,
            max_attempts=max_attempts,
            **options,
        )

    async def signed_call(
        self,
        *,
        service: str,
        action: str,
        version: str,
        region: str | None,
        payload: Mapping[str, Any],
    ) -> dict[str, Any]:
        """:func:`call` with this adapter's credentials and options, retried by its policy.

        Raises:
            ProviderTransportError: every attempt failed without an answer.
            ProviderResponseError: the body is not in the documented shape.
        """
        return await self._retry.run(
            lambda: call(
                self._client,
                host=self._host,
                service=service,
                action=action,
                version=version,
                region=region,
                payload=payload,
                secret_id=self._credentials.key_id,
                secret_key=self._credentials.secret,
                token=self._credentials.token,
                clock=self._clock,
                request_timeout=self._timeout,
                scheme=self._scheme,
            )
        )
