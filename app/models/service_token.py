from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, utcnow


class ServiceToken(SQLModel, table=True):
    """A token issued for a verified verification: what introspection and revocation consult."""

    __tablename__ = "service_tokens"

    jti: str = Field(primary_key=True, max_length=40)
    client_id: str = Field(foreign_key="clients.id", max_length=40)
    verification_id: str = Field(foreign_key="verifications.id", index=True, max_length=40)
    kid: str = Field(max_length=40)
    issued_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    revoked_reason: str | None = Field(default=None, max_length=40)
