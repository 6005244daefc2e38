from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, utcnow


class AuditEvent(SQLModel, table=True):
    """An append-only, hash-chained, PII-free record of a state change or an admin read.

    ``hash = HMAC-SHA-256(audit key[key_version], prev_hash || canonical JSON of the other
    fields)`` under a key that never sits in the database; rows written before keyed chaining
    have no ``key_version`` and a plain SHA-256 link. ``realname audit verify`` recomputes the
    chain. ``seq`` is gap-free and assigned under the chain-head lock.
    """

    __tablename__ = "audit_events"

    seq: int = Field(primary_key=True)
    occurred_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    actor_type: str = Field(max_length=16)  # client | admin | system
    actor_id: str | None = Field(default=None, max_length=64)
    action: str = Field(max_length=64, index=True)
    subject_type: str = Field(max_length=32)
    subject_id: str | None = Field(default=None, max_length=64, index=True)
    data: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    request_id: str | None = Field(default=None, max_length=64)
    #: Version of the audit chain key (``REALNAME_AUDIT_KEYS``); None: a legacy SHA-256 link.
    key_version: int | None = None
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
