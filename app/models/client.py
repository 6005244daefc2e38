from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class Client(SQLModel, table=True):
    """A backend service that calls the API. ``mode`` decides sandbox (test) or real (live)."""

    __tablename__ = "clients"

    id: str = Field(default_factory=lambda: new_id("cli"), primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    mode: str = Field(max_length=8)  # "test" | "live"
    default_level: str = Field(default="L2", max_length=2)
    #: Requests per minute this client may make (0 = the service default).
    request_quota_per_minute: int = Field(default=0)
    webhook_url: str | None = Field(default=None, max_length=2000)
    disabled: bool = Field(default=False)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
