"""Request and response bodies of the verification endpoints (never tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.text import SafeStr


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy_version: SafeStr = Field(
        min_length=1,
        max_length=40,
        description="A published collection-rules version",
    )


class VerificationCreate(BaseModel):
    """Art. 24 identity fields of one end user, with consent to the published collection rules."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "external_user_id": "42",
                    "real_name": "张三",
                    "id_number": "11010519491231002X",
                    "phone": "13800138000",
                    "consent": {"policy_version": "2026-01"},
                }
            ]
        },
    )

    external_user_id: SafeStr = Field(
        min_length=1,
        max_length=200,
        description="Your id for the end user: never the person's ID number or phone number",
    )
    real_name: SafeStr = Field(min_length=1, max_length=256, description="The name on the ID card")
    id_number: SafeStr = Field(
        min_length=1,
        max_length=64,
        description="The 18-character resident ID number (full-width digits are accepted)",
    )
    phone: SafeStr = Field(
        min_length=1,
        max_length=64,
        description="A mainland China mobile number (11 digits, optionally +86)",
    )
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
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "ver_01jf3m5k2c8v",
                    "external_user_id": "42",
                    "status": "awaiting_code",
                    "status_reason": None,
                    "level": "L2",
                    "checks": [
                        {"type": "id_registry", "status": "passed", "reason": None},
                        {"type": "sms_otp", "status": "pending", "reason": None},
                    ],
                    "masked": {
                        "real_name": "张*",
                        "id_number": "110105********002X",
                        "phone": "138****8000",
                    },
                    "next_action": {
                        "type": "submit_sms_code",
                        "expires_at": "2026-01-31T08:05:00Z",
                    },
                    "policy_version": "2026-01",
                    "superseded_by": None,
                    "erasure": None,
                    "created_at": "2026-01-31T08:00:00Z",
                    "updated_at": "2026-01-31T08:00:01Z",
                }
            ]
        }
    )

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
