from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, utcnow


class SigningKey(SQLModel, table=True):
    """An Ed25519 key that signs service tokens. The private half is stored only sealed
    (AES-256-GCM under a key derived from REALNAME_SECRET_KEY, bound to the kid)."""

    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True, max_length=40)
    private_key_sealed: str = Field(sa_column=Column(Text, nullable=False))
    public_x: str = Field(max_length=64)  # base64url of the raw 32-byte public key (JWK "x")
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    #: Set when a newer key took over; still published until its tokens have expired.
    retired_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    #: Set by an emergency revocation of every token: no longer published at all, so offline
    #: verifiers reject what it signed as soon as they refresh the JWKS.
    withdrawn_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
