from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, new_id, utcnow


class Identity(SQLModel, table=True):
    """The person behind verifications, known only by a keyed blind index of the ID number.

    ``adult_on`` is the one fact kept from the birth date: the day the person comes of age
    (minor protection, Art. 13). The birth date itself is never stored.
    """

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("bidx_version", "id_number_bidx", name="uq_identities_bidx"),
    )

    id: str = Field(default_factory=lambda: new_id("idn"), primary_key=True, max_length=40)
    id_number_bidx: str = Field(max_length=64)
    bidx_version: int
    adult_on: date
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
