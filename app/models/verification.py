from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class Status(StrEnum):
    PENDING = "pending"
    AWAITING_CODE = "awaiting_code"
    VERIFIED = "verified"
    REJECTED = "rejected"
    NEEDS_REVIEW = "needs_review"
    EXPIRED = "expired"
    LOCKED = "locked"
    REVOKED = "revoked"
    ERASED = "erased"


#: Statuses in which a verification still holds (or may come to hold) a person's registration.
LIVE_STATUSES = frozenset(
    {Status.PENDING, Status.AWAITING_CODE, Status.VERIFIED, Status.NEEDS_REVIEW}
)


class Verification(SQLModel, table=True):
    """One attempt to verify one end user of a client at a level.

    Personal data appears only as keyed blind indexes (``*_bidx``, tagged with ``bidx_version``),
    an argon2id hash of the identity tuple, and masked display values. Erasure clears all of
    them and the identity link, leaving a tombstone.
    """

    __tablename__ = "verifications"
    __table_args__ = (
        Index("ix_verifications_client_user", "client_id", "external_user_id"),
        Index("ix_verifications_status_created", "status", "created_at"),
    )

    id: str = Field(default_factory=lambda: new_id("ver"), primary_key=True, max_length=40)
    client_id: str = Field(foreign_key="clients.id", max_length=40)
    external_user_id: str = Field(max_length=200)
    identity_id: str | None = Field(
        default=None, foreign_key="identities.id", index=True, max_length=40
    )
    status: str = Field(default=Status.PENDING, max_length=20)
    status_reason: str | None = Field(default=None, max_length=64)
    level: str = Field(max_length=2)
    id_type: str = Field(default="cn_resident_id", max_length=32)
    bidx_version: int | None = None
    #: The crypto suite of the ``*_bidx`` columns: ``intl`` (HMAC-SHA-256) or ``gm`` (HMAC-SM3).
    bidx_suite: str | None = Field(default=None, max_length=8)
    name_bidx: str | None = Field(default=None, max_length=64)
    phone_bidx: str | None = Field(default=None, index=True, max_length=64)
    identity_hash: str | None = Field(default=None, max_length=200)
    masked_name: str | None = Field(default=None, max_length=200)
    masked_id_number: str | None = Field(default=None, max_length=18)
    masked_phone: str | None = Field(default=None, max_length=11)
    #: Transient AES-256-GCM sealed copy of the canonical fields, needed only while checks run
    #: and a code can be (re)sent; wiped when the verification leaves pending/awaiting_code.
    sealed_subject: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: Reviewers' free-text notes on their decisions, sealed (AES-256-GCM, bound to the row);
    #: the audit trail keeps only the reason codes. Wiped by erasure.
    review_notes_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    policy_version: str = Field(foreign_key="policies.version", max_length=40)
    consent_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    #: A correction (new identity fields for the same external user) in progress or done.
    superseded_by: str | None = Field(default=None, max_length=40)
    erased_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    expires_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
