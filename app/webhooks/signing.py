"""Standard Webhooks signing (``standard-webhooks/standard-webhooks``, spec/standard-webhooks.md).

Every request this service signs (event deliveries, SMS gateway calls) carries

- ``webhook-id``: the message id; receivers de-duplicate on it,
- ``webhook-timestamp``: Unix seconds of signing,
- ``webhook-signature``: ``v1,<base64 HMAC-SHA-256 of "{id}.{timestamp}.{body}">``, one per
  active secret, space-separated (two during a secret rotation),

with secrets written ``whsec_<base64 key>``. Signing is the reference library's own
(:class:`standardwebhooks.Webhook`), so what we send is what its ``verify`` accepts.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from standardwebhooks import Webhook

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (the prefix, not a secret)
#: 32 random bytes: the HMAC-SHA-256 block is 64, the spec asks for 24 to 64.
SECRET_BYTES: Final = 32

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"


def new_secret() -> str:
    """A fresh ``whsec_`` secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def key_of(secret: str) -> bytes:
    """The HMAC key of a secret: the base64-decoded part of ``whsec_…``; any other string is
    taken as raw UTF-8 bytes (secrets configured before the ``whsec_`` form)."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    return secret.encode("utf-8")


def headers(
    msg_id: str, body: bytes, keys: Sequence[bytes], *, at: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, signed with every key in ``keys``."""
    if not keys:
        raise ValueError("at least one signing key is needed")
    when = (at or datetime.now(UTC)).replace(microsecond=0)
    signatures = " ".join(Webhook(key).sign(msg_id, when, body) for key in keys)
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(int(when.timestamp())),
        SIGNATURE_HEADER: signatures,
    }
