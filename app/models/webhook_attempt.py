from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class WebhookAttempt(SQLModel, table=True):
    """One HTTP request of a delivery: when, the answer's status and latency, and at most 200
    characters of the answer's body (never the request, which the event table can rebuild)."""

    __tablename__ = "webhook_attempts"

    id: str = Field(default_factory=lambda: new_id("wha"), primary_key=True, max_length=40)
    delivery_id: str = Field(foreign_key="webhook_deliveries.id", index=True, max_length=40)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", index=True, max_length=40)
    attempted_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    status_code: int | None = None
    latency_ms: int = Field(default=0)
    #: A code: timeout, connection_error, redirect_refused, address_not_allowed, http_<status>.
    error: str | None = Field(default=None, max_length=64)
    response_excerpt: str | None = Field(default=None, max_length=200)
    next_retry_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
