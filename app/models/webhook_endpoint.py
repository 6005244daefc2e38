from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class WebhookEndpoint(SQLModel, table=True):
    """A URL of a client that receives its events, signed per Standard Webhooks.

    The signing secret is kept sealed (AES-256-GCM, bound to the endpoint id) because the
    service must sign with it; after a rotation the previous secret keeps signing alongside
    until ``previous_secret_until``. ``events`` is a JSON list of event types, or null for all.
    """

    __tablename__ = "webhook_endpoints"

    id: str = Field(default_factory=lambda: new_id("we"), primary_key=True, max_length=40)
    client_id: str = Field(foreign_key="clients.id", index=True, max_length=40)
    url: str = Field(max_length=2000)
    events: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    secret_sealed: str = Field(sa_column=Column(Text, nullable=False))
    previous_secret_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    previous_secret_until: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    #: Set at the first failed attempt of a run of failures; cleared by a success.
    failing_since: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    disabled_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    deleted_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
