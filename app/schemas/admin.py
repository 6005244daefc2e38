"""Admin API bodies. Verifications appear with masked values only."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.verification import CheckOut, Masked

#: Not whitespace as ``str.strip`` sees it (``\s`` means different things in each regex dialect).
_NOT_SPACE = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
#: What the review service accepts as a reason: at least four characters once stripped.
REASON_PATTERN = _NOT_SPACE + r"[\s\S]{2,}" + _NOT_SPACE
Reason = Field(
    min_length=4,
    max_length=500,
    pattern=REASON_PATTERN,
    description="Why: at least 4 characters besides surrounding whitespace",
)


class SignInIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    totp: str | None = Field(default=None, max_length=16)


class SessionOut(BaseModel):
    token: str
    csrf_token: str
    expires_at: datetime
    username: str
    role: str


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Reason


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id_number: str = Field(max_length=64)
    reason: str = Reason


class AdminVerification(BaseModel):
    id: str
    client_id: str
    external_user_id: str
    status: str
    status_reason: str | None
    level: str
    masked: Masked
    created_at: datetime
    updated_at: datetime


class AdminVerificationPage(BaseModel):
    data: list[AdminVerification]
    next_cursor: str | None


class AuditEventOut(BaseModel):
    seq: int
    occurred_at: datetime
    actor_type: str
    actor_id: str | None
    action: str
    subject_type: str
    subject_id: str | None
    data: dict[str, Any]
    hash: str


class AdminVerificationDetail(AdminVerification):
    checks: list[CheckOut]
    timeline: list[AuditEventOut]
    client_name: str | None
    adult: bool | None


class ClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    mode: Literal["test", "live"]
    default_level: Literal["L1", "L2", "L3"] = "L2"


class ClientOut(BaseModel):
    id: str
    name: str
    mode: str
    default_level: str
    disabled: bool
    created_at: datetime


class ClientCreated(ClientOut):
    api_key: str


class Stats(BaseModel):
    by_status: dict[str, int]
