from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models._types import UTCDateTime, utcnow


class IdempotencyKey(SQLModel, table=True):
    """A POST's Idempotency-Key with the request fingerprint and the stored answer (24 h).

    ``request_hash`` is a keyed hash of method, path and body, so it reveals nothing of the body.
    The stored response is the PII-free verification object.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("client_id", "key", name="uq_idempotency_client_key"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(foreign_key="clients.id", max_length=40)
    key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    #: What the request created (so erasure can remove the stored answer too).
    resource_id: str | None = Field(default=None, max_length=40, index=True)
    status_code: int | None = None
    response_body: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False, index=True)
    )
