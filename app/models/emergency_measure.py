from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class EmergencyMeasure(SQLModel, table=True):
    """An Art. 25 emergency action: issuance suspended, tokens revoked, a provider quarantined.

    ``scope`` is ``*`` (every client), a client id, or (quarantine) a verifier or sender name.
    A measure is in force while ``ended_at`` is empty; a revocation of every token is instant
    (``ended_at == started_at``) and its ``started_at`` is the cutoff: tokens issued at or
    before it are inactive.
    """

    __tablename__ = "emergency_measures"
    __table_args__ = (Index("ix_emergency_measures_kind_scope", "kind", "scope", "ended_at"),)

    id: str = Field(default_factory=lambda: new_id("emg"), primary_key=True, max_length=40)
    kind: str = Field(max_length=32)  # issuance_suspended | tokens_revoked | provider_quarantined
    scope: str = Field(max_length=64)
    reason_code: str = Field(max_length=40)
    started_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    started_by: str | None = Field(default=None, max_length=64)
    #: The audit event recording the start (for the incident report).
    started_seq: int | None = None
    ended_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    ended_by: str | None = Field(default=None, max_length=64)
    end_reason_code: str | None = Field(default=None, max_length=40)
    ended_seq: int | None = None
