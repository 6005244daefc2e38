from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class SandboxMessage(SQLModel, table=True):
    """An SMS 'delivered' by the sandbox sender for a test-mode client.

    The one place a code exists in readable form, by design: integrators must be able to read
    it. Only test-mode clients' messages land here, and they expire within an hour.
    """

    __tablename__ = "sandbox_messages"

    id: str = Field(default_factory=lambda: new_id("msg"), primary_key=True, max_length=40)
    message_id: str = Field(max_length=64, unique=True)
    verification_id: str = Field(foreign_key="verifications.id", index=True, max_length=40)
    to_masked: str = Field(max_length=16)
    body: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
