"""Request and response bodies of the emergency actions (Art. 25)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class EmergencyIn(BaseModel):
    """An emergency action: a documented ``reason_code``; ``client_id`` to act on one client
    only (suspend, resume, revoke); ``provider`` names the verifier or sender to quarantine."""

    model_config = ConfigDict(extra="forbid")

    reason_code: str | None = Field(default=None, max_length=40)
    client_id: str | None = Field(default=None, min_length=1, max_length=40)
    provider: str | None = Field(default=None, min_length=1, max_length=64)


class MeasureOut(BaseModel):
    id: str
    kind: str
    scope: str
    reason_code: str
    started_at: datetime
    started_by: str | None
    started_seq: int | None
    ended_at: datetime | None
    ended_by: str | None
    ended_seq: int | None


class EmergencyOut(BaseModel):
    action: str
    #: False when the measure was already in force (suspending twice changes nothing).
    changed: bool
    audit_seq: int | None
    revoked_tokens: int
    measure: MeasureOut | None
