from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class SmsCode(SQLModel, table=True):
    """A one-time code, kept only as an HMAC. Attempts are counted before the code is compared;
    ``consumed_at`` is set once, by a guarded update; a resend supersedes the previous code."""

    __tablename__ = "sms_codes"

    id: str = Field(default_factory=lambda: new_id("otp"), primary_key=True, max_length=40)
    verification_id: str = Field(foreign_key="verifications.id", index=True, max_length=40)
    code_hmac: str = Field(max_length=64)
    #: The crypto suite of ``code_hmac``: ``intl`` (HMAC-SHA-256) or ``gm`` (HMAC-SM3).
    suite: str = Field(default="intl", max_length=8, sa_column_kwargs={"server_default": "intl"})
    attempts: int = Field(default=0)
    max_attempts: int
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    consumed_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    superseded: bool = Field(default=False)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
