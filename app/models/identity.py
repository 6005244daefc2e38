from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class Identity(SQLModel, table=True):
    """The person behind verifications, known only by a keyed blind index of the ID number.

    The one fact kept from the birth date is the day the person comes of age (minor
    protection, Art. 13), and only sealed (AES-256-GCM, bound to the row): in plaintext it
    would give back digits 7-14 of the ID number, which the mask hides, so mask and date
    together would rebuild the whole number. The birth date itself is never stored.
    """

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("bidx_version", "id_number_bidx", name="uq_identities_bidx"),
    )

    id: str = Field(default_factory=lambda: new_id("idn"), primary_key=True, max_length=40)
    #: What the index is of: ``cn_resident_id`` (the ID number) or ``cn_network_identity`` (the
    #: network identity's app-scoped identifier). Each field has its own derived key, so the two
    #: kinds of index can never collide.
    id_type: str = Field(
        default="cn_resident_id",
        max_length=32,
        sa_column_kwargs={"server_default": "cn_resident_id"},
    )
    id_number_bidx: str = Field(max_length=64)
    bidx_version: int
    #: The crypto suite of ``id_number_bidx``: ``intl`` (HMAC-SHA-256) or ``gm`` (HMAC-SM3).
    bidx_suite: str = Field(
        default="intl", max_length=8, sa_column_kwargs={"server_default": "intl"}
    )
    adult_on_sealed: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
