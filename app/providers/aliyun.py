"""Alibaba Cloud OpenAPI: ``ACS3-HMAC-SHA256`` (signature V3) signing and one signed RPC ``POST``.

Signing (:func:`sign_acs3`)
---------------------------
As in Alibaba Cloud's "V3 request structure and signature" documentation::

    CanonicalRequest = Method + "\\n" + CanonicalURI + "\\n" + CanonicalQueryString + "\\n"
                       + CanonicalHeaders + "\\n" + SignedHeaders + "\\n" + HashedPayload
    HashedPayload    = hex(SHA256(body))          (also sent as x-acs-content-sha256)
    CanonicalQuery   = "k=v" pairs, RFC 3986-encoded (space -> %20, "~" kept), sorted by key;
                       a parameter with an empty value is written as its name alone
    CanonicalHeaders = "name:value\\n" for host, content-type (when there is a body) and every
                       x-acs-* header, names lowercased, values trimmed, sorted by name; a name
                       that occurs more than once (in any letter case) is signed once, its
                       values sorted and joined with ","
    StringToSign     = "ACS3-HMAC-SHA256\\n" + hex(SHA256(CanonicalRequest))
    Signature        = hex(HMAC-SHA256(AccessKeySecret, StringToSign))
    Authorization    = "ACS3-HMAC-SHA256 Credential=" + AccessKeyId
                       + ",SignedHeaders=" + SignedHeaders + ",Signature=" + Signature

The signed ``x-acs-*`` headers are ``x-acs-action``, ``x-acs-version``, ``x-acs-date`` (UTC,
``YYYY-MM-DDThh:mm:ssZ``), ``x-acs-signature-nonce`` (unique per request, against replay),
``x-acs-content-sha256`` and, with STS credentials, ``x-acs-security-token``. The encoding and
header rules match ``get_authorization``, ``get_canonical_query_string`` and
``get_canonicalized_headers`` of the official ``aliyun/darabonba-openapi-util``
(``python/alibabacloud_openapi_util/client.py``). ``tests/providers/test_providers_aliyun.py``
checks the result against the documentation's fixed-parameter example and against that SDK's
own ``test_get_authorization`` (duplicate ``x-acs-test`` / ``x-acs-TEST`` headers, an empty
query value, empty path: ``Signature=da772425…``).

Calling (:func:`call`)
----------------------
One ``POST https://<host>/`` for an RPC-style API. The parameters go where the caller says:
``params_in="body"`` (the default) sends them form-encoded (``application/x-www-form-urlencoded``)
or as JSON, and the URL carries none; ``params_in="query"`` sends them in the query string with an
empty body and no ``Content-Type``, which is what the official generated SDK clients do for
``SendSms`` (see :mod:`app.senders.aliyun_sms`). Alibaba Cloud's RPC gateway reads parameters from
either place. With STS credentials the caller passes ``security_token``; it is sent and signed as
``x-acs-security-token``, as the SDK's ``do_request`` does. Alibaba Cloud answers errors with HTTP
4xx/5xx and a JSON body holding ``Code``; the parsed body is returned whatever the status, for the
caller to map. A URL with parameters is never logged here: ``httpx``'s request log stays at
``WARNING`` (``app.logging``) and :func:`app.providers.post` never chains ``httpx`` errors.

Adapters (:class:`AliyunAdapter`)
---------------------------------
The base of the cloudauth verifiers and the SMS sender: the credentials (from
``REALNAME_ALIYUN_ACCESS_KEY_ID``, ``REALNAME_ALIYUN_ACCESS_KEY_SECRET`` and the optional
``REALNAME_ALIYUN_SECURITY_TOKEN``, see :func:`credentials_from_env`), the shared adapter
options (:class:`app.providers.base.ProviderAdapter`) and one signed call with retries
(:meth:`AliyunAdapter.signed_call`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypedDict, Unpack
from urllib.parse import quote

import httpx

from app.providers import DEFAULT_TIMEOUT, json_object, post
from app.providers.base import AdapterOptions, CredentialEnv, Credentials, ProviderAdapter

__all__ = [
    "ALGORITHM",
    "ENV_ACCESS_KEY_ID",
    "ENV_ACCESS_KEY_SECRET",
    "ENV_REGION",
    "ENV_SECURITY_TOKEN",
    "Acs3Signature",
    "AliyunAdapter",
    "AliyunCredentials",
    "acs3_date",
    "authorize_acs3",
    "call",
    "canonical_headers",
    "canonical_query",
    "credentials_from_env",
    "sign_acs3",
]

ALGORITHM: Final = "ACS3-HMAC-SHA256"
ENV_ACCESS_KEY_ID: Final = "REALNAME_ALIYUN_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET: Final = "REALNAME_ALIYUN_ACCESS_KEY_SECRET"  # noqa: S105 (a name)
ENV_SECURITY_TOKEN: Final = "REALNAME_ALIYUN_SECURITY_TOKEN"  # noqa: S105 (a name)
ENV_REGION: Final = "REALNAME_ALIYUN_REGION"
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Acs3Signature:
    """A signed request: the headers to send and the intermediate strings (for tests, debugging).

    ``canonical_request`` contains only the body's hash, never the body itself.
    """

    canonical_request: str
    string_to_sign: str
    signature: str
    authorization: str
    headers: dict[str, str]


def _encode(value: str) -> str:
    # RFC 3986: only unreserved characters (letters, digits, "-", "_", ".", "~") stay as they are.
    return quote(value, safe="~", encoding="utf-8")


def canonical_query(params: Mapping[str, str]) -> str:
    """Encode ``params`` as the V3 canonical query string (also a valid form body).

    Keys and values are RFC 3986-encoded (space as ``%20``, ``~`` kept), then sorted by key; an
    empty value leaves the name alone, as the official SDK's ``get_canonical_query_string`` does.
    """
    pairs = sorted((_encode(key), _encode(value)) for key, value in params.items())
    return "&".join(f"{key}={value}" if value else key for key, value in pairs)


def _form(params: Mapping[str, str]) -> str:
    pairs = sorted((_encode(key), _encode(value)) for key, value in params.items())
    return "&".join(f"{key}={value}" for key, value in pairs)


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """``(CanonicalHeaders, SignedHeaders)`` for the headers to sign.

    Names are lowercased; a name given more than once (in any case) appears once, with its
    trimmed values sorted and joined by ``","`` (``get_canonicalized_headers`` of the SDK).
    """
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name.lower(), []).append(value.strip())
    names = sorted(grouped)
    lines = "".join(f"{name}:{','.join(sorted(grouped[name]))}\n" for name in names)
    return lines, ";".join(names)


def authorize_acs3(
    *,
    method: str,
    canonical_uri: str,
    query: Mapping[str, str],
    headers: Iterable[tuple[str, str]],
    hashed_payload: str,
    access_key_id: str,
    access_key_secret: str,
) -> tuple[str, str, str, str]:
    """``(canonical_request, string_to_sign, signature, authorization)``; a pure function.

    The core of :func:`sign_acs3`, in the shape of the SDK's ``get_authorization`` so that its
    test vector can be checked directly.
    """
    lines, signed_headers = canonical_headers(headers)
    canonical_request = "\n".join(
        [method, canonical_uri, canonical_query(query), lines, signed_headers, hashed_payload]
    )
    string_to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical_request.encode('utf-8')).hexdigest()}"
    signature = hmac.new(
        access_key_secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={access_key_id},"
        f"SignedHeaders={signed_headers},Signature={signature}"
    )
    return canonical_request, string_to_sign, signature, authorization


def acs3_date(timestamp: float) -> str:
    """The ``x-acs-date`` for Unix time ``timestamp``: UTC, ISO 8601, whole seconds."""
    return datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_acs3(
    *,
    access_key_id: str,
    access_key_secret: str,
    method: str,
    host: str,
    action: str,
    version: str,
    date: str,
    nonce: str,
    body: bytes = b"",
    content_type: str | None = None,
    query: Mapping[str, str] | None = None,
    canonical_uri: str = "/",
    security_token: str | None = None,
) -> Acs3Signature:
    """Sign one request with ``ACS3-HMAC-SHA256``; a pure function (see module docstring).

    Args:
        access_key_id: The AccessKey ID, sent in the clear in ``Authorization``.
        access_key_secret: The AccessKey secret; only used as the HMAC key.
        method: The HTTP method, e.g. ``"POST"``.
        host: E.g. ``"cloudauth.aliyuncs.com"``.
        action: ``x-acs-action``, e.g. ``"Id2MetaVerify"``.
        version: ``x-acs-version``, e.g. ``"2019-03-07"``.
        date: ``x-acs-date`` (see :func:`acs3_date`).
        nonce: ``x-acs-signature-nonce``; must be unique per request.
        body: The exact body bytes.
        content_type: The ``Content-Type`` that will be sent; signed when given.
        query: Query parameters (unencoded).
        canonical_uri: The encoded path, ``"/"`` for RPC-style APIs.
        security_token: ``x-acs-security-token`` for STS credentials.

    Returns:
        The :class:`Acs3Signature`, whose ``headers`` are everything to send.
    """
    hashed_payload = hashlib.sha256(body).hexdigest()
    signed = {
        "host": host,
        "x-acs-action": action,
        "x-acs-content-sha256": hashed_payload,
        "x-acs-date": date,
        "x-acs-signature-nonce": nonce,
        "x-acs-version": version,
    }
    if content_type is not None:
        signed["content-type"] = content_type
    if security_token is not None:
        signed["x-acs-security-token"] = security_token
    canonical_request, string_to_sign, signature, authorization = authorize_acs3(
        method=method,
        canonical_uri=canonical_uri,
        query=query or {},
        headers=signed.items(),
        hashed_payload=hashed_payload,
        access_key_id=access_key_id,
        access_key_secret=access_key_secret,
    )
    return Acs3Signature(
        canonical_request,
        string_to_sign,
        signature,
        authorization,
        {**signed, "authorization": authorization},
    )


def _new_nonce() -> str:
    return secrets.token_hex(16)


async def call(
    client: httpx.AsyncClient,
    *,
    host: str,
    action: str,
    version: str,
    params: Mapping[str, str],
    access_key_id: str,
    access_key_secret: str,
    body_format: Literal["form", "json"] = "form",
    params_in: Literal["body", "query"] = "body",
    security_token: str | None = None,
    clock: Callable[[], float] = time.time,
    nonce: Callable[[], str] = _new_nonce,
    request_timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    scheme: str = "https",
) -> dict[str, Any]:
    """Make one signed RPC-style call (``POST /``) and return its body.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        host: The endpoint, e.g. ``"dysmsapi.aliyuncs.com"``.
        action: The API action.
        version: The API version.
        params: The API parameters.
        access_key_id: The AccessKey ID.
        access_key_secret: The AccessKey secret.
        body_format: ``"form"`` (``application/x-www-form-urlencoded``) or ``"json"``.
        params_in: ``"body"`` (see ``body_format``) or ``"query"`` (empty body).
        security_token: The STS security token (``x-acs-security-token``), if any.
        clock: Current Unix time; tests inject a fixed one.
        nonce: Returns a fresh ``x-acs-signature-nonce``; 32 random hex digits by default.
        request_timeout: Per-request timeouts.
        scheme: ``"https"``; tests may use ``"http"``.

    Returns:
        The JSON object answered, whatever the HTTP status (errors carry ``Code``).

    Raises:
        ProviderTransportError: timeout, network error, or HTTP 502/503/504.
        ProviderResponseError: the body is not a JSON object.
    """
    query: Mapping[str, str] = {}
    content_type: str | None
    if params_in == "query":
        body, content_type, query = b"", None, params
    elif body_format == "json":
        body = json.dumps(dict(params), ensure_ascii=False, separators=(",", ":")).encode()
        content_type = JSON_CONTENT_TYPE
    else:
        body = _form(params).encode("ascii")
        content_type = FORM_CONTENT_TYPE
    signed = sign_acs3(
        access_key_id=access_key_id,
        access_key_secret=access_key_secret,
        method="POST",
        host=host,
        action=action,
        version=version,
        date=acs3_date(clock()),
        nonce=nonce(),
        body=body,
        content_type=content_type,
        query=query,
        security_token=security_token,
    )
    headers = {**signed.headers, "accept": "application/json"}
    url = f"{scheme}://{host}/" + (f"?{_form(query)}" if query else "")
    response = await post(
        client,
        url,
        content=body,
        headers=headers,
        request_timeout=request_timeout,
    )
    return json_object(response)


class AliyunCredentials(TypedDict):
    """The credential keyword arguments of every :class:`AliyunAdapter`."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None


_ENV: Final = CredentialEnv(ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SECURITY_TOKEN)


def credentials_from_env(
    env: Mapping[str, str], also: Sequence[str] = (), defaults: Mapping[str, str] | None = None
) -> tuple[AliyunCredentials, dict[str, str]]:
    """The credentials as keyword arguments, and the values of the adapter's own variables
    ``also`` (see :meth:`~app.providers.base.CredentialEnv.read`)."""
    credentials, values = _ENV.read(env, also, defaults)
    return (
        AliyunCredentials(
            access_key_id=credentials.key_id,
            access_key_secret=credentials.secret,
            security_token=credentials.token,
        ),
        values,
    )


class AliyunAdapter(ProviderAdapter):
    """The base of the adapters that call Alibaba Cloud RPC-style APIs.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        access_key_id: The AccessKey ID.
        access_key_secret: The AccessKey secret.
        security_token: The STS security token, with temporary credentials.
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
        access_key_id: str,
        access_key_secret: str,
        security_token: str | None = None,
        host: str,
        max_attempts: int = 1,
        **options: Unpack[AdapterOptions],
    ) -> None:
        super().__init__(
            client,
            credentials=Credentials(access_key_id, access_key_secret, security_token),
            host=host,
            max_attempts=max_attempts,
            **options,
        )

    async def signed_call(
        self,
        *,
        action: str,
        version: str,
        params: Mapping[str, str],
        params_in: Literal["body", "query"] = "body",
    ) -> dict[str, Any]:
        """:func:`call` with this adapter's credentials and options, retried by its policy.

        Raises:
            ProviderTransportError: every attempt failed without an answer.
            ProviderResponseError: the body is not a JSON object.
        """
        return await self._retry.run(
            lambda: call(
                self._client,
                host=self._host,
                action=action,
                version=version,
                params=params,
                access_key_id=self._credentials.key_id,
                access_key_secret=self._credentials.secret,
                params_in=params_in,
                security_token=self._credentials.token,
                clock=self._clock,
                request_timeout=self._timeout,
                scheme=self._scheme,
            )
        )
