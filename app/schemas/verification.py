"""Request and response bodies of the verification endpoints (never tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.text import SafeStr


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy_version: SafeStr = Field(
        min_length=1, max_length=40, description="A published collection-rules version"
    )


class VerificationCreate(BaseModel):
    """Art. 24 identity fields of one end user, with consent to the published collection rules."""

    model_config = ConfigDict(extra="forbid")

    external_user_id: SafeStr = Field(
        min_length=1,
        max_length=200,
        description="Your id for the end user: never the person's ID number or phone number",
    )
    real_name: SafeStr = Field(max_length=256)
    id_number: SafeStr = Field(max_length=64)
    phone: SafeStr = Field(max_length=64)
    consent: Consent
    id_type: Literal["cn_resident_id"] = "cn_resident_id"
    level: Literal["L1", "L2", "L3"] | None = None


class CheckOut(BaseModel):
    type: str
    status: str
    reason: str | None = None


class Masked(BaseModel):
    real_name: str | None
    id_number: str | None
    phone: str | None


class NextAction(BaseModel):
    type: Literal["submit_sms_code"]
    expires_at: datetime


class Erasure(BaseModel):
    """Proof of an Art. 43 erasure: the audit event that records it (verifiable in the chain)."""

    receipt_id: str
    erased_at: datetime
    audit_event_seq: int
    audit_event_hash: str
    verification_ids: list[str]


class ConsentOut(BaseModel):
    """What the user consented to: the published rules' version and SHA-256, when, and the id
    of the signed receipt (``GET /v1/verifications/{id}/consent-receipt``)."""

    policy_version: str
    policy_sha256: str | None
    consented_at: datetime
    receipt_id: str


class ConsentReceiptOut(BaseModel):
    """A consent receipt: ``receipt`` is a JWS (EdDSA, ``typ: consent-receipt+jwt``) over the
    same facts, verifiable with the keys at ``/.well-known/jwks.json``."""

    receipt_id: str
    verification_id: str
    consent: ConsentOut
    receipt: str
    kid: str
    jwks_uri: str


class VerificationPage(BaseModel):
    """A page of verifications, newest first."""

    data: list[VerificationOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `after` for the next page; null on the last page"
    )


class VerificationOut(BaseModel):
    id: str
    external_user_id: str
    status: str
    status_reason: str | None = None
    level: str
    checks: list[CheckOut]
    masked: Masked
    next_action: NextAction | None = None
    policy_version: str
    consent: ConsentOut | None = None
    superseded_by: str | None = None
    erasure: Erasure | None = None
    created_at: datetime
    updated_at: datetime
