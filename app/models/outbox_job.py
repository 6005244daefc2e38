from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class OutboxJob(SQLModel, table=True):
    """Work committed with a state change and done after it: running checks, sending an SMS,
    delivering a webhook.

    Written in the same transaction as the change that needs it, claimed by a worker with a
    lease (``locked_until``), marked done afterwards, so a crash between commit and work loses
    nothing. ``payload`` is sealed (AES-256-GCM) and wiped when the job is done; a ``webhook``
    job's payload is the id of its delivery, nothing secret.
    """

    __tablename__ = "outbox_jobs"
    __table_args__ = (Index("ix_outbox_jobs_due", "done_at", "run_after"),)

    id: str = Field(default_factory=lambda: new_id("job"), primary_key=True, max_length=40)
    kind: str = Field(max_length=32)  # run_checks | send_sms | webhook
    verification_id: str | None = Field(
        default=None, foreign_key="verifications.id", index=True, max_length=40
    )
    payload: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: Webhook jobs: the endpoint, so one slow endpoint is held to a few slots of its own.
    lane: str | None = Field(default=None, max_length=40)
    attempts: int = Field(default=0)
    run_after: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    locked_until: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    done_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    last_error: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
