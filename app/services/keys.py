"""Ed25519 signing keys for service tokens: creation, rotation, the published JWKS.

Private keys are stored sealed under a key derived from ``REALNAME_SECRET_KEY`` and cached
in memory per process. Rotation without downtime: a new key becomes active; the previous one
stays published until every token it signed has expired, so backends holding a cached JWKS
keep verifying while they refresh.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, or_, select

from app.crypto import seal, unseal
from app.models import SigningKey
from app.models._types import utcnow
from app.services import audit

KEY_SEAL = "signing-key/v1"
ACTIVE_CACHE_SECONDS = 30.0


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    private: Ed25519PrivateKey


def jwk(key: SigningKey) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": key.public_x,
        "kid": key.kid,
        "alg": "EdDSA",
        "use": "sig",
    }


async def create(
    session: AsyncSession, master_key: bytes, *, actor_id: str | None = None
) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = "k_" + secrets.token_hex(8)
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key = SigningKey(
        kid=kid,
        private_key_sealed=seal(master_key, KEY_SEAL, raw_private, kid.encode()),
        public_x=_b64url(raw_public),
    )
    session.add(key)
    await session.flush()
    await audit.record(
        session,
        action="signing_key.created",
        subject_type="signing_key",
        subject_id=kid,
        actor_type="admin" if actor_id else "system",
        actor_id=actor_id,
    )
    return key


async def active(session: AsyncSession) -> SigningKey | None:
    return (
        await session.execute(
            select(SigningKey)
            .where(col(SigningKey.retired_at).is_(None))
            .order_by(col(SigningKey.created_at).desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def rotate(
    session: AsyncSession, master_key: bytes, *, actor_id: str | None = None
) -> SigningKey:
    """Retire every active key and make a new one active."""
    now = utcnow()
    for key in (
        await session.execute(select(SigningKey).where(col(SigningKey.retired_at).is_(None)))
    ).scalars():
        key.retired_at = now
    await session.flush()
    return await create(session, master_key, actor_id=actor_id)


async def published(session: AsyncSession, token_ttl_seconds: int) -> list[SigningKey]:
    """Active keys and keys retired recently enough that tokens they signed may still be valid;
    never a key withdrawn by an emergency revocation."""
    cutoff = utcnow() - timedelta(seconds=token_ttl_seconds + 300)
    return list(
        (
            await session.execute(
                select(SigningKey)
                .where(
                    or_(col(SigningKey.retired_at).is_(None), col(SigningKey.retired_at) > cutoff),
                    col(SigningKey.withdrawn_at).is_(None),
                )
                .order_by(col(SigningKey.created_at).desc())
            )
        ).scalars()
    )


class KeyRing:
    """Per-process cache of the active private key and of public keys by kid."""

    def __init__(self, master_key: bytes) -> None:
        self._master = master_key
        self._active: ActiveKey | None = None
        self._active_at = 0.0
        self._public: dict[str, Ed25519PublicKey] = {}

    def cached_active(self) -> ActiveKey | None:
        """The active key if this process read it lately (no database, nothing created)."""
        if self._active is not None and time.monotonic() - self._active_at < ACTIVE_CACHE_SECONDS:
            return self._active
        return None

    async def signing_key(self, session: AsyncSession) -> ActiveKey:
        cached = self.cached_active()
        if cached is not None:
            return cached
        key = await active(session) or await create(session, self._master)
        raw = unseal(self._master, KEY_SEAL, key.private_key_sealed, key.kid.encode())
        self._active = ActiveKey(key.kid, Ed25519PrivateKey.from_private_bytes(raw))
        self._active_at = time.monotonic()
        return self._active

    def cached_public_key(self, kid: str) -> Ed25519PublicKey | None:
        """The public key ``kid`` if this process has read it already (no database)."""
        return self._public.get(kid)

    async def public_key(self, session: AsyncSession, kid: str) -> Ed25519PublicKey | None:
        cached = self._public.get(kid)
        if cached is not None:
            return cached
        key = await session.get(SigningKey, kid)
        if key is None:
            return None
        public = Ed25519PublicKey.from_public_bytes(_b64url_decode(key.public_x))
        self._public[kid] = public
        return public

    def forget_active(self) -> None:
        self._active = None
