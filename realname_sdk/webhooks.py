"""Receive the service's webhooks: verify a delivery and read it as a typed :class:`Event`.

Deliveries follow Standard Webhooks: headers ``webhook-id`` (the event id: de-duplicate on
it, a retry carries the same one), ``webhook-timestamp`` and ``webhook-signature``
(``v1,<base64>``, several while the service rotates your secret), signed with the endpoint's
``whsec_…`` secret. Verification uses the reference library, ``standardwebhooks``::

    from realname_sdk.webhooks import InvalidWebhook, verify

    try:
        event = verify(raw_body, request_headers, "whsec_...")
    except InvalidWebhook:
        ...  # answer 400; a genuine delivery is retried
    if event.type == "verification.verified":
        user = event.data.external_user_id

Verify the raw body exactly as received, before parsing it. An event is a pointer: read the
verification with your API key for details. :func:`realname_sdk.fastapi.webhook_event` does all
of this as a FastAPI dependency; :class:`realname_sdk.testing.FakeWebhookSender` signs test
deliveries for your own tests.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from standardwebhooks import Webhook

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "Event",
    "EventData",
    "InvalidWebhook",
    "new_secret",
    "parse",
    "sign",
    "verify",
]

#: Largest accepted difference between ``webhook-timestamp`` and the receiver's clock.
DEFAULT_TOLERANCE_SECONDS: Final = 300
_TIMESTAMP: Final = re.compile(r"[0-9]{1,15}")
_MAX_SIGNATURE_HEADER: Final = 4096


class InvalidWebhook(Exception):
    """A delivery that must not be trusted.

    Attributes:
        reason: ``missing_headers``, ``stale_timestamp``, ``bad_signature`` or ``malformed``
            (signed, but not an event this SDK can read).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EventData:
    """What an event points at. No personal data: ids, a status, a reason code, the level."""

    verification_id: str | None
    #: Your own user id as you sent it; ``[erased]`` once the person's data was erased.
    external_user_id: str | None
    status: str | None
    reason: str | None
    level: str | None
    #: ``token.revoked`` only: the revoked token's ``jti``.
    jti: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """An event as delivered and as listed at ``GET /v1/events``."""

    id: str
    type: str
    created_at: datetime
    livemode: bool
    data: EventData
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)


def _opt(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def parse(document: Mapping[str, Any]) -> Event:
    """Read an event object (a verified delivery's JSON, or an item of ``GET /v1/events``).

    Raises:
        InvalidWebhook: ``malformed``, when a member the SDK needs is missing or mistyped.
    """
    try:
        data = document.get("data") or {}
        if not isinstance(data, Mapping):
            raise TypeError("data")
        created = datetime.fromisoformat(str(document["created_at"]).replace("Z", "+00:00"))
        if not isinstance(document["id"], str) or not isinstance(document["type"], str):
            raise TypeError("id/type")
        return Event(
            id=document["id"],
            type=document["type"],
            created_at=created,
            livemode=bool(document.get("livemode", False)),
            data=EventData(
                verification_id=_opt(data, "verification_id"),
                external_user_id=_opt(data, "external_user_id"),
                status=_opt(data, "status"),
                reason=_opt(data, "reason"),
                level=_opt(data, "level"),
                jti=_opt(data, "jti"),
            ),
            raw=MappingProxyType(dict(document)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidWebhook("malformed", "The delivery is not an event") from exc


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Event:
    """Verify a delivery and return its event.

    Args:
        body: The raw request body, exactly as received.
        headers: The request headers (any mapping; names are matched case-insensitively).
        secret: The endpoint's ``whsec_…`` secret, or several (accept either while you
            rotate it).
        tolerance: Largest accepted clock difference in seconds, either way (replays older
            than this are refused).
        now: The current Unix time; :func:`time.time` by default (tests inject it).

    Returns:
        The event, once the timestamp is fresh and a ``v1`` signature matches.

    Raises:
        InvalidWebhook: ``missing_headers``, ``stale_timestamp``, ``bad_signature`` or
            ``malformed``.
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise InvalidWebhook("missing_headers", "The Standard Webhooks headers are missing")
    if not _TIMESTAMP.fullmatch(stamp):
        raise InvalidWebhook("stale_timestamp", "webhook-timestamp is not Unix seconds")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance:
        raise InvalidWebhook("stale_timestamp", "webhook-timestamp is outside the tolerance")
    if len(signatures) > _MAX_SIGNATURE_HEADER:
        raise InvalidWebhook("bad_signature", "webhook-signature is too long")
    when = datetime.fromtimestamp(int(stamp), UTC)
    keys = [secret] if isinstance(secret, str) else list(secret)
    expected = [Webhook(k).sign(msg_id, when, raw).encode() for k in keys]
    matched = False
    for candidate in signatures.split(" "):
        for wanted in expected:  # every pair is compared: no early exit
            matched |= hmac.compare_digest(wanted, candidate.encode())
    if not matched:
        raise InvalidWebhook("bad_signature", "No webhook-signature matches the secret")
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise InvalidWebhook("malformed", "The delivery is not JSON") from exc
    if not isinstance(document, Mapping):
        raise InvalidWebhook("malformed", "The delivery is not a JSON object")
    event = parse(document)
    if event.id != msg_id:
        raise InvalidWebhook("malformed", "webhook-id is not the event's id")
    return event


def sign(msg_id: str, body: bytes, secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers the service would send with ``body`` (used by the test helpers)."""
    when = datetime.fromtimestamp(int(time.time()) if timestamp is None else timestamp, UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body),
    }


def new_secret() -> str:
    """A fresh ``whsec_`` secret (for tests; the service makes the real ones)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
