from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class Check(SQLModel, table=True):
    """One verifier's run inside a verification: its type, status and reason code."""

    __tablename__ = "checks"
    __table_args__ = (
        UniqueConstraint("verification_id", "type", name="uq_checks_verification_type"),
    )

    id: str = Field(default_factory=lambda: new_id("chk"), primary_key=True, max_length=40)
    verification_id: str = Field(foreign_key="verifications.id", max_length=40)
    type: str = Field(max_length=32)  # id_registry | sms_otp | carrier_3e
    status: str = Field(default="pending", max_length=16)  # pending | passed | failed | unavailable
    reason: str | None = Field(default=None, max_length=64)
    verifier: str | None = Field(default=None, max_length=64)
    attempts: int = Field(default=0)
    billable: bool = Field(default=False)
    provider_reference: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
