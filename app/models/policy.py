from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, utcnow


class Policy(SQLModel, table=True):
    """A published version of the collection rules a person consents to (Art. 41)."""

    __tablename__ = "policies"

    version: str = Field(primary_key=True, max_length=40)
    sha256: str = Field(max_length=64)
    body: str = Field(sa_column=Column(Text, nullable=False))
    published_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
