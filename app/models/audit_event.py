from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, utcnow


class AuditEvent(SQLModel, table=True):
    """An append-only, hash-chained, PII-free record of a state change or an admin read.

    Events belong to one of several chains (``chain``, one head row each in ``audit_head``).
    ``hash = HMAC-SHA-256(audit key[key_version], prev_hash || canonical JSON of the other
    fields)`` under a key that never sits in the database, where ``prev_hash`` is the hash of
    the event before it in its chain; rows written before keyed chaining have no
    ``key_version`` and a plain SHA-256 link. ``chain_seq`` is the event's gap-free position in
    its chain, assigned under that chain's head lock; ``seq`` is a row number from the database
    (unique and increasing: the order of the trail's listings). ``realname audit verify``
    recomputes every chain.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_chain_position", "chain", "chain_seq", unique=True),)

    seq: int | None = Field(default=None, primary_key=True)
    chain: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    chain_seq: int
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
