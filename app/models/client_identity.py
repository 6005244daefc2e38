from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, utcnow


class ClientIdentity(SQLModel, table=True):
    """Which of a client's users a person is registered as: one person, one user per client."""

    __tablename__ = "client_identities"
    __table_args__ = (UniqueConstraint("client_id", "identity_id", name="uq_client_identities"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(foreign_key="clients.id", max_length=40)
    identity_id: str = Field(foreign_key="identities.id", index=True, max_length=40)
    external_user_id: str = Field(max_length=200)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
