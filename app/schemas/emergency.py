"""Request and response bodies of the emergency actions (Art. 25)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.text import SafeStr

#: The documented reason codes (``app.services.emergency.REASON_CODES``; a test keeps them equal).
ReasonCode = Literal[
    "security_incident",
    "data_breach_suspected",
    "key_compromise",
    "credential_stuffing",
    "provider_compromised",
    "provider_outage",
    "regulator_order",
    "maintenance",
    "drill",
    "incident_resolved",
]


class EmergencyIn(BaseModel):
    """An emergency action: a documented ``reason_code``; ``client_id`` to act on one client
    only (suspend, resume, revoke); ``provider`` names the verifier or sender to quarantine."""

    model_config = ConfigDict(extra="forbid")

    reason_code: ReasonCode
    client_id: SafeStr | None = Field(default=None, min_length=1, max_length=40)
    provider: SafeStr | None = Field(default=None, min_length=1, max_length=64)


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
