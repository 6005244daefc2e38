"""Alibaba Cloud OpenAPI: ``ACS3-HMAC-SHA256`` (signature V3) signing and one signed RPC ``POST``.

Signing (:func:`sign_acs3`)
---------------------------
As in Alibaba Cloud's "V3 request structure and signature" documentation::

    CanonicalRequest = Method + "\\n" + CanonicalURI + "\\n" + CanonicalQueryString + "\\n"
                       + CanonicalHeaders + "\\n" + SignedHeaders + "\\n" + HashedPayload
    HashedPayload    = hex(SHA256(body))          (also sent as x-acs-content-sha256)
    CanonicalQuery   = "k=v" pairs, RFC 3986-encoded (space -> %20, "~" kept), sorted by key
    CanonicalHeaders = "name:value\\n" for host, content-type (when there is a body) and every
                       x-acs-* header, names lowercased, values trimmed, sorted by name
    StringToSign     = "ACS3-HMAC-SHA256\\n" + hex(SHA256(CanonicalRequest))
    Signature        = hex(HMAC-SHA256(AccessKeySecret, StringToSign))
    Authorization    = "ACS3-HMAC-SHA256 Credential=" + AccessKeyId
                       + ",SignedHeaders=" + SignedHeaders + ",Signature=" + Signature

The signed ``x-acs-*`` headers are ``x-acs-action``, ``x-acs-version``, ``x-acs-date`` (UTC,
``YYYY-MM-DDThh:mm:ssZ``), ``x-acs-signature-nonce`` (unique per request, against replay),
``x-acs-content-sha256`` and, with STS credentials, ``x-acs-security-token``. The encoding and
header rules match ``get_authorization`` of ``aliyun/darabonba-openapi-util``
(``python/alibabacloud_openapi_util/client.py``). ``tests/providers/test_providers_aliyun.py``
checks the result against the documentation's fixed-parameter example.

Calling (:func:`call`)
----------------------
One ``POST https://<host>/`` for an RPC-style API. Every parameter goes in the body, form-encoded
(``application/x-www-form-urlencoded``, the default) or as JSON: the URL carries none, so personal
data never reaches a URL (the official SDKs put some of these parameters in the query string).
Alibaba Cloud answers errors with HTTP 4xx/5xx and a JSON body holding ``Code``; the parsed body
is returned whatever the status, for the caller to map.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx

from app.providers import DEFAULT_TIMEOUT, json_object, post

__all__ = [
    "ALGORITHM",
    "Acs3Signature",
    "acs3_date",
    "call",
    "canonical_query",
    "sign_acs3",
]

ALGORITHM: Final = "ACS3-HMAC-SHA256"
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

    Keys and values are RFC 3986-encoded (space as ``%20``, ``~`` kept), then sorted by key.
    """
    pairs = sorted((_encode(key), _encode(value)) for key, value in params.items())
    return "&".join(f"{key}={value}" for key, value in pairs)


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
    names = sorted(signed)
    canonical_request = "\n".join(
        [
            method,
            canonical_uri,
            canonical_query(query or {}),
            "".join(f"{name}:{signed[name].strip()}\n" for name in names),
            ";".join(names),
            hashed_payload,
        ]
    )
    string_to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical_request.encode('utf-8')).hexdigest()}"
    signature = hmac.new(
        access_key_secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={access_key_id},"
        f"SignedHeaders={';'.join(names)},Signature={signature}"
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
    clock: Callable[[], float] = time.time,
    nonce: Callable[[], str] = _new_nonce,
    request_timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    scheme: str = "https",
) -> dict[str, Any]:
    """Make one signed RPC-style call (``POST /``, parameters in the body) and return its body.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        host: The endpoint, e.g. ``"dysmsapi.aliyuncs.com"``.
        action: The API action.
        version: The API version.
        params: The API parameters, all sent in the body.
        access_key_id: The AccessKey ID.
        access_key_secret: The AccessKey secret.
        body_format: ``"form"`` (``application/x-www-form-urlencoded``) or ``"json"``.
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
    if body_format == "json":
        body = json.dumps(dict(params), ensure_ascii=False, separators=(",", ":")).encode()
        content_type = JSON_CONTENT_TYPE
    else:
        body = canonical_query(params).encode("ascii")
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
    )
    headers = {**signed.headers, "accept": "application/json"}
    response = await post(
        client,
        f"{scheme}://{host}/",
        content=body,
        headers=headers,
        request_timeout=request_timeout,
    )
    return json_object(response)
