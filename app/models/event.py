from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class Event(SQLModel, table=True):
    """Something a client may want to know happened: a verification's status change, a token
    revocation, a test ``ping``.

    Written in the same transaction as the change it announces (``services.events.emit``),
    listed at ``GET /v1/events`` and delivered to the client's webhook endpoints. An event is a
    pointer: it carries ids, the status, a reason code and the level, never personal data.
    ``seq`` orders a client's events for cursor pagination.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_client_seq", "client_id", "seq"),
        Index("ix_events_created_at", "created_at"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(default_factory=lambda: new_id("evt"), unique=True, index=True, max_length=40)
    client_id: str = Field(foreign_key="clients.id", max_length=40)
    type: str = Field(max_length=40)
    livemode: bool = Field(default=False)
    #: Not a foreign key: events outlive purged verifications for their 30 days.
    verification_id: str | None = Field(default=None, index=True, max_length=40)
    #: The client's own user id; ``[erased]`` after an erasure.
    external_user_id: str | None = Field(default=None, max_length=200)
    status: str | None = Field(default=None, max_length=20)
    reason: str | None = Field(default=None, max_length=64)
    level: str | None = Field(default=None, max_length=2)
    jti: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
