from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class WebhookDelivery(SQLModel, table=True):
    """One event on its way to one endpoint: ``pending`` until a 2xx answer (``succeeded``) or
    until the retry schedule is used up or the endpoint goes away (``failed``).

    The outbox job of kind ``webhook`` that carries it is written in the same transaction as
    the event; each attempt is a :class:`~app.models.webhook_attempt.WebhookAttempt`.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_created", "status", "created_at"),)

    id: str = Field(default_factory=lambda: new_id("whd"), primary_key=True, max_length=40)
    event_id: str = Field(foreign_key="events.id", index=True, max_length=40)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", index=True, max_length=40)
    client_id: str = Field(foreign_key="clients.id", index=True, max_length=40)
    status: str = Field(default="pending", max_length=16)  # pending | succeeded | failed
    attempts: int = Field(default=0)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=64)
    next_attempt_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    completed_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
