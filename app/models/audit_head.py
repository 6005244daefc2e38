from __future__ import annotations

from sqlmodel import Field, SQLModel


class AuditHead(SQLModel, table=True):
    """The single row holding the chain's tip; locked (FOR UPDATE) by every audit writer."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(default=0)
    hash: str = Field(default="0" * 64, max_length=64)
