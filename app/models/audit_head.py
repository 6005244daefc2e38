from __future__ import annotations

from sqlmodel import Field, SQLModel


class AuditHead(SQLModel, table=True):
    """The tip of one audit chain (``id`` = the chain's number, ``seq`` = its length); an audit
    writer locks one head (FOR UPDATE) for the rest of its transaction."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(default=0)
    hash: str = Field(default="0" * 64, max_length=64)
