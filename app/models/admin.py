from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class Admin(SQLModel, table=True):
    """A person who reviews (reviewer), reads (auditor) or runs (admin) the service."""

    __tablename__ = "admins"

    id: str = Field(default_factory=lambda: new_id("adm"), primary_key=True, max_length=40)
    username: str = Field(max_length=64, unique=True)
    password_hash: str = Field(max_length=200)
    role: str = Field(max_length=16)  # reviewer | auditor | admin
    #: RFC 6238 secret, sealed; None when TOTP is not enrolled.
    totp_secret_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: The RFC 6238 time step of the last one-time code accepted: a code is good once (§5.2).
    totp_last_step: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    disabled: bool = Field(default=False)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    last_login_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
