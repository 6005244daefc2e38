"""A generic HTTP SMS gateway sender: one signed JSON ``POST`` per message.

Point :class:`HttpGatewaySender` at any HTTP endpoint that accepts the request below and hands
the message on to a carrier. The gateway is outside this service; this module defines the wire
protocol and how a gateway authenticates what it receives.

Request
-------
``POST <url>`` (the configured URL, unchanged: personal data never goes into it), with the
headers

``Content-Type: application/json``
    The body is compact JSON (no insignificant whitespace), encoded as UTF-8 with non-ASCII
    characters written as themselves, not as ``\\u`` escapes.
``Idempotency-Key: <message_id>``
    The same value as ``message_id`` in the body. The outbox worker calls the sender *at least
    once* per message, so a gateway should deliver each ``message_id`` at most once.
``webhook-id: <message_id>``, ``webhook-timestamp: <unix s>``, ``webhook-signature: v1,<b64>``
    The Standard Webhooks signature, exactly as on this service's event webhooks (see
    *Signature* below). A retry is signed afresh: the same ``message_id`` with a new timestamp
    and signature.

and the body ::

    {"message_id":"…","to":"+8613800138000","template":"otp",
     "params":{"code":"123456"},"body":"您的验证码是123456"}

``to`` is the E.164 phone number. Gateways that need pre-registered templates use
``template`` and ``params``; those that take free text use ``body``.

Signature
---------
Standard Webhooks (``standard-webhooks/standard-webhooks``, ``spec/standard-webhooks.md``): the
base64 HMAC-SHA-256 of ``"{webhook-id}.{webhook-timestamp}.{raw body}"`` under the key that the
``whsec_<base64>`` secret (``REALNAME_SMS_GATEWAY_SECRET``) encodes; a secret in any other form
is used as raw UTF-8 bytes. A gateway verifies with the reference library, unchanged::

    from standardwebhooks import Webhook
    Webhook("whsec_...").verify(raw_body, request_headers)  # raises if forged or stale

Deprecated signature
--------------------
Until the next release, ``REALNAME_SMS_GATEWAY_LEGACY_SIGNATURE=true`` also sends the headers of
the previous scheme, ``X-Realname-Timestamp: <unix seconds>`` and
``X-Realname-Signature: v1=<hex>``, keyed with the secret's UTF-8 bytes as before::

    signed_payload = ASCII(timestamp) || "." || raw_body_bytes
    signature      = lowercase_hex(HMAC-SHA-256(key=secret, msg=signed_payload))
    header         = "v1=" + signature

where ``timestamp`` is the exact text of ``X-Realname-Timestamp`` and ``raw_body_bytes`` are the
body bytes exactly as received (verify *before* parsing or re-serialising the JSON). To verify,
a gateway should:

1. recompute the signature from the raw body and the timestamp header with the shared secret;
2. compare it in constant time (e.g. :func:`hmac.compare_digest`) with each ``v1=`` value of
   the signature header; values are separated by spaces or commas, and more than one may
   appear while a secret is being rotated; accept if any matches and ignore other schemes;
3. reject a timestamp more than **300 seconds** from its own clock, in either direction, to
   limit replays; and de-duplicate on ``message_id`` within that window;
4. check that ``Idempotency-Key`` equals the body's ``message_id``.

:func:`verify_signature` does steps 1-3 of that deprecated scheme. The secret should hold at
least 32 random bytes, shared only with the gateway.

Outcomes
--------
One :meth:`HttpGatewaySender.send` makes exactly one request and maps the answer to a
:class:`~app.senders.base.SendResult`:

* 2xx: ``delivered=True``; ``provider_reference`` is the response's JSON ``"id"`` if that is a
  short printable string (see below), else ``None``.
* 429: ``delivered=False, retriable=True, reason="gateway_throttled"``.
* 5xx, and connection, network, proxy or remote protocol errors: ``retriable=True,
  reason="gateway_unavailable"``.
* Timeouts (connect, read, write or pool): ``retriable=True, reason="timeout"``.
* Any other status: ``retriable=False, reason="gateway_rejected"``. That is every other 4xx, and
  also 1xx and 3xx: redirects are not followed (unless the injected client is configured to)
  and repeating the same request would get the same answer.

The provider reference is stored, so it must not be able to carry personal data: it is kept
only when it is 1-128 visible ASCII characters and contains neither the last 8 digits of the
recipient's number nor any template parameter value of four or more characters (such as the
code); otherwise it is ``None`` and the message still counts as delivered.

Logging
-------
One record per send, with only ``message_id``, ``status`` (the HTTP status, or ``None``) and
``reason`` in ``extra``. The phone number, body, code and parameters are never logged, and no
traceback is attached (exception messages may quote requests).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import httpx

from app.senders.base import OutgoingSms, SendResult
from app.webhooks import signing

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_TOLERANCE_SECONDS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "HttpGatewaySender",
    "compute_signature",
    "verify_signature",
]

logger = logging.getLogger(__name__)

#: Connect within 2 s; read, write and wait for a pooled connection 5 s each.
DEFAULT_TIMEOUT: Final = httpx.Timeout(5.0, connect=2.0)
#: The largest clock difference, in seconds, that :func:`verify_signature` accepts by default.
DEFAULT_TOLERANCE_SECONDS: Final = 300
#: Deprecated (with ``legacy_signature``): the signing time in Unix seconds.
TIMESTAMP_HEADER: Final = "X-Realname-Timestamp"
#: Deprecated (with ``legacy_signature``): one or more ``v1=<hex>`` signatures.
SIGNATURE_HEADER: Final = "X-Realname-Signature"

_SCHEME: Final = "v1"
# Unix seconds as plain ASCII decimal digits; 15 digits reach far beyond any real clock.
_TIMESTAMP: Final = re.compile(r"[0-9]{1,15}")
_HEX_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_SEPARATORS: Final = re.compile(r"[,\s]+")
# More than this is not a signature header but noise (or an attempt to make us work).
_MAX_SIGNATURE_HEADER_CHARS: Final = 4096
# Printable ASCII, no spaces: safe in a header, a log field and a database column.
_MESSAGE_ID: Final = re.compile(r"[\x21-\x7e]{1,255}")
_PROVIDER_REFERENCE: Final = re.compile(r"[\x21-\x7e]{1,128}")
# A gateway's acknowledgement is small; a larger body is not parsed for a reference.
_MAX_RESPONSE_BYTES: Final = 16 * 1024
# Parameter values shorter than this are too common to screen references against.
_MIN_SCREENED_PARAM_CHARS: Final = 4
_RECIPIENT_DIGITS_SCREENED: Final = 8

_UNAVAILABLE_ERRORS: Final = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)


def compute_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Compute the ``v1`` signature of a request: see the module docstring.

    Args:
        secret: The key shared with the gateway.
        timestamp: The exact text of the ``X-Realname-Timestamp`` header.
        body: The raw request body.

    Returns:
        The lowercase hex HMAC-SHA-256 of ``timestamp + "." + body`` (without the ``v1=``).

    Raises:
        UnicodeEncodeError: ``timestamp`` is not ASCII.
    """
    signed_payload = f"{timestamp}.".encode("ascii") + body
    return hmac.new(secret, signed_payload, hashlib.sha256).hexdigest()


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature_header: str,
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """Check a request signed by :class:`HttpGatewaySender` (or a webhook signed the same way).

    Args:
        secret: The key shared with the sender.
        timestamp: The ``X-Realname-Timestamp`` header, verbatim.
        body: The raw request body, exactly as received.
        signature_header: The ``X-Realname-Signature`` header: one or more ``v1=<hex>`` values
            separated by spaces and/or commas (several while a secret is rotated). Values of
            other schemes are ignored.
        now: The current Unix time; :func:`time.time` if ``None``. Tests inject it.
        tolerance: The largest accepted difference, in seconds and in either direction,
            between ``timestamp`` and ``now``.

    Returns:
        ``True`` only if the timestamp is a plain decimal integer within ``tolerance`` of
        ``now`` and at least one ``v1`` value equals the expected signature (compared in
        constant time). A malformed timestamp or header gives ``False``, never an exception.

    Raises:
        ValueError: ``tolerance`` is negative.
    """
    if tolerance < 0:
        raise ValueError("tolerance must not be negative")
    if not _TIMESTAMP.fullmatch(timestamp):
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    if len(signature_header) > _MAX_SIGNATURE_HEADER_CHARS:
        return False
    expected = compute_signature(secret, timestamp, body).encode("ascii")
    matched = False
    for item in _SEPARATORS.split(signature_header):
        scheme, sep, value = item.partition("=")
        if scheme != _SCHEME or not sep:
            continue
        candidate = value.lower()
        if not _HEX_SHA256.fullmatch(candidate):
            continue
        # No early exit: every candidate is compared, whichever one matches.
        matched |= hmac.compare_digest(expected, candidate.encode("ascii"))
    return matched


class HttpGatewaySender:
    """Delivers SMS through a generic HTTP gateway with signed JSON requests.

    The wire protocol, signature scheme and outcome mapping are in the module docstring. One
    :meth:`send` makes exactly one request: the outbox worker owns retries and back-off.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        url: The gateway endpoint, an absolute ``http`` or ``https`` URL. It is used unchanged
            and must not contain secrets that could end up in logs of intermediaries.
        secret: The secret shared with the gateway: ``whsec_<base64>`` (or raw bytes, the
            HMAC key itself).
        legacy_signature: Deprecated: also send ``X-Realname-Timestamp`` and
            ``X-Realname-Signature`` (the previous scheme).
        timeout: Per-request timeouts, :data:`DEFAULT_TIMEOUT` by default.
        clock: Returns the current Unix time for the timestamp header; tests inject a fake.

    Raises:
        ValueError: ``url`` is not an absolute ``http(s)`` URL, or ``secret`` is empty.
    """

    name: ClassVar[str] = "http_gateway"
    sandbox: ClassVar[bool] = False

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        secret: str | bytes,
        *,
        legacy_signature: bool = False,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise ValueError("url must be an absolute http or https URL") from None
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            raise ValueError("url must be an absolute http or https URL")
        if not secret:
            raise ValueError("secret must not be empty")
        self._client = client
        self._url = url
        self._key = signing.key_of(secret) if isinstance(secret, str) else secret
        # The previous scheme keyed the HMAC with the configured text itself.
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._legacy = legacy_signature
        self._timeout = timeout
        self._clock = clock

    async def send(self, message: OutgoingSms) -> SendResult:
        """Post ``message`` to the gateway once and map the answer to a :class:`SendResult`.

        Args:
            message: The SMS to deliver. Its phone, template, parameters and body travel only
                in the signed JSON body.

        Returns:
            The outcome as mapped in the module docstring: ``delivered=True`` (with an optional
            provider reference), or ``delivered=False`` with ``reason`` one of
            ``gateway_throttled``, ``gateway_unavailable``, ``timeout`` (all retriable) or
            ``gateway_rejected`` (not retriable).

        Raises:
            ValueError: ``message.message_id`` is not 1-255 printable ASCII characters without
                spaces (it is sent as a header); nothing is sent.
            httpx.HTTPError: a transport problem that is a configuration error rather than an
                outage (e.g. :class:`httpx.UnsupportedProtocol`); the worker treats it as a
                retriable failure.
        """
        if not _MESSAGE_ID.fullmatch(message.message_id):
            raise ValueError("message_id must be 1-255 printable ASCII characters without spaces")
        body = _encode_body(message)
        now = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": message.message_id,
            **signing.headers(message.message_id, body, [self._key], at=_utc(now)),
        }
        if self._legacy:
            timestamp = str(now)
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = (
                f"{_SCHEME}={compute_signature(self._secret, timestamp, body)}"
            )
        try:
            response = await self._client.post(
                self._url, content=body, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException:
            return _failed(message.message_id, None, "timeout", retriable=True)
        except _UNAVAILABLE_ERRORS:
            return _failed(message.message_id, None, "gateway_unavailable", retriable=True)
        status = response.status_code
        if response.is_success:
            reference = _provider_reference(response, message)
            _log(logging.INFO, "sms gateway accepted the message", message.message_id, status)
            return SendResult(delivered=True, provider_reference=reference)
        if status == 429:
            return _failed(message.message_id, status, "gateway_throttled", retriable=True)
        if response.is_server_error:
            return _failed(message.message_id, status, "gateway_unavailable", retriable=True)
        return _failed(message.message_id, status, "gateway_rejected", retriable=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self._url!r})"


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _encode_body(message: OutgoingSms) -> bytes:
    payload = {
        "message_id": message.message_id,
        "to": message.phone,
        "template": message.template,
        "params": dict(message.params),
        "body": message.body,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _failed(message_id: str, status: int | None, reason: str, *, retriable: bool) -> SendResult:
    level = logging.INFO if retriable else logging.WARNING
    _log(level, "sms gateway send failed", message_id, status, reason)
    return SendResult(delivered=False, retriable=retriable, reason=reason)


def _log(
    level: int, event: str, message_id: str, status: int | None, reason: str | None = None
) -> None:
    # Identifiers and codes only: see "Logging" in the module docstring.
    extra: dict[str, Any] = {"message_id": message_id, "status": status, "reason": reason}
    logger.log(level, event, extra=extra)


def _provider_reference(response: httpx.Response, message: OutgoingSms) -> str | None:
    """The response's JSON ``"id"`` if it is safe to store (module docstring), else ``None``."""
    if len(response.content) > _MAX_RESPONSE_BYTES:
        return None
    try:
        document = response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from it
        return None
    reference = document.get("id") if isinstance(document, dict) else None
    if not isinstance(reference, str) or not _PROVIDER_REFERENCE.fullmatch(reference):
        return None
    recipient = "".join(c for c in message.phone if c.isascii() and c.isdigit())
    screened = [recipient[-_RECIPIENT_DIGITS_SCREENED:]] if recipient else []
    screened += [v for v in message.params.values() if len(v) >= _MIN_SCREENED_PARAM_CHARS]
    if any(value in reference for value in screened):
        return None
    return reference
