"""Admin API bodies. Verifications appear with masked values only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.schemas.text import NoControls, SafeStr
from app.schemas.verification import CheckOut, Masked

#: Why an admin acts: the documented codes (README "Admin reasons"). The audit trail, which
#: cannot be erased, stores only the code; free text goes in a note sealed with the verification.
REASON_CODES: dict[str, str] = {
    "documents_checked": "the reviewer checked the person's documents",
    "registry_confirmed": "the registry confirmed the identity on a later query",
    "identity_mismatch": "the documents do not match the submitted identity",
    "suspected_fraud": "signs of fraud or of someone else's identity",
    "person_request": "the person asked (erasure, revocation)",
    "client_request": "the integrator asked",
    "legal_order": "a court, regulator or police order",
    "data_correction": "the submitted data was wrong",
    "support_case": "a support or complaint case about this person",
    "other": "anything else; a note is required",
}
#: The codes an erasure or a search may give: they keep no note, so "other" says nothing.
SpecificReasonCode = Literal[
    "documents_checked",
    "registry_confirmed",
    "identity_mismatch",
    "suspected_fraud",
    "person_request",
    "client_request",
    "legal_order",
    "data_correction",
    "support_case",
]
ReasonCode = Literal[SpecificReasonCode, "other"]
MAX_NOTE = 500
_CODE_DESCRIPTION = "Why, as one of the documented reason codes"
_FORMER_NAME = "Deprecated: the former name of `reason_code` (a code, not free text)"


def _other_needs_a_note(field: str) -> dict[str, Any]:
    return {
        "if": {"properties": {field: {"const": "other"}}, "required": [field]},
        "then": {"required": ["note"], "properties": {"note": {"type": "string"}}},
    }


#: A note says something: at least one character that is not whitespace.
Note = Annotated[str, Field(min_length=1, max_length=MAX_NOTE, pattern=r"\S"), NoControls()]


def _not_null(value: Any) -> Any:
    """Leave a field out rather than send null (the schema has no null for it)."""
    if value is None:
        raise ValueError("leave the field out instead of sending null")
    return value


def _absent_not_null(schema: dict[str, Any]) -> None:
    """The JSON schema of an optional field that may be left out but not sent as null."""
    options = schema.pop("anyOf", None)
    if options is not None:
        schema.update(next(o for o in options if o.get("type") != "null"))
    schema.pop("default", None)


def _deprecated(schema: dict[str, Any]) -> None:
    _absent_not_null(schema)
    schema["deprecated"] = True


#: One of ``reason_code`` or its former name ``reason`` is required.
_EITHER_NAME: dict[str, Any] = {"anyOf": [{"required": ["reason_code"]}, {"required": ["reason"]}]}


class SignInIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: SafeStr = Field(min_length=1, max_length=64)
    password: SafeStr = Field(min_length=1, max_length=1024)
    totp: SafeStr | None = Field(default=None, max_length=16)
    end_other_sessions: bool = Field(
        default=False, description="Also end every other session of this admin"
    )


class SessionOut(BaseModel):
    token: str
    csrf_token: str
    expires_at: datetime
    username: str
    role: str


class ReasonIn(BaseModel):
    """A decision's reason: a code, and an optional note kept sealed with the verification."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **_EITHER_NAME,
            "allOf": [_other_needs_a_note("reason_code"), _other_needs_a_note("reason")],
        },
    )

    reason_code: ReasonCode | None = Field(
        default=None, description=_CODE_DESCRIPTION, json_schema_extra=_absent_not_null
    )
    reason: ReasonCode | None = Field(
        default=None, description=_FORMER_NAME, json_schema_extra=_deprecated
    )
    note: Note | None = Field(
        default=None,
        json_schema_extra=_absent_not_null,
        description="Free text, kept sealed with the verification and wiped by its erasure"
        " (required with `other`)",
    )

    _no_nulls = field_validator("reason_code", "reason", "note", mode="before")(_not_null)

    @property
    def code(self) -> str | None:
        """The reason code given (the review service refuses a missing one)."""
        return self.reason_code or self.reason


class ErasureIn(BaseModel):
    """An erasure's reason: a specific code and no note (erasure would wipe it at once)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_EITHER_NAME)

    reason_code: SpecificReasonCode | None = Field(
        default=None, description=_CODE_DESCRIPTION, json_schema_extra=_absent_not_null
    )
    reason: SpecificReasonCode | None = Field(
        default=None, description=_FORMER_NAME, json_schema_extra=_deprecated
    )

    _no_nulls = field_validator("reason_code", "reason", mode="before")(_not_null)

    @property
    def code(self) -> str | None:
        """The reason code given (the review service refuses a missing one)."""
        return self.reason_code or self.reason


class SearchIn(ErasureIn):
    """A search belongs to no one verification, so it takes a specific code and no note."""

    id_number: SafeStr = Field(max_length=64)


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


class ReviewNote(BaseModel):
    """A reviewer's note on a decision (kept sealed; never in the audit trail)."""

    at: datetime
    admin_id: str
    action: str
    reason_code: str
    note: str


class AdminCheckOut(CheckOut):
    verifier: str | None = Field(
        default=None, description="The verifier that answered (with failover, which provider)"
    )


class AdminVerificationDetail(AdminVerification):
    checks: list[AdminCheckOut]
    timeline: list[AuditEventOut]
    notes: list[ReviewNote] = Field(default_factory=list)
    client_name: str | None
    adult: bool | None


class ClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeStr = Field(min_length=1, max_length=200)
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


class DailyCostOut(BaseModel):
    """Billable provider calls of one client on one UTC day, with their estimated cost."""

    day: str
    client_id: str
    provider: str = Field(description="The verifier or sender that was billed")
    billable_calls: int
    estimated_cost: float = Field(description="Yuan, from REALNAME_PROVIDER_PRICES")


class Stats(BaseModel):
    by_status: dict[str, int]
    costs: list[DailyCostOut] = Field(
        default_factory=list, description="Last 30 days, per client and day, newest first"
    )
    breakers: dict[str, str] = Field(
        default_factory=dict,
        description="Each live verifier's circuit breaker in this process: closed, open, half_open",
    )
