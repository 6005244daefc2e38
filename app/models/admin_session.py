from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, utcnow


class AdminSession(SQLModel, table=True):
    """A signed-in admin. Only a keyed hash of the bearer token is stored. Sessions end after
    ``idle`` without use or at ``expires_at`` (absolute), whichever comes first."""

    __tablename__ = "admin_sessions"

    token_hash: str = Field(primary_key=True, max_length=64)
    admin_id: str = Field(foreign_key="admins.id", index=True, max_length=40)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    last_seen_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
