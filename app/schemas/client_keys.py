"""Admin API bodies of the clients-and-keys lifecycle. Keys appear by id and prefix only; a
plain key appears once, in the answer that created it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.admin import ClientOut

#: Why an admin changed a client or a key; recorded in the audit event
#: (``app.services.client_keys`` refuses any other).
REASON_CODES = (
    "scheduled_rotation",
    "key_compromised",
    "key_unused",
    "client_request",
    "client_offboarded",
    "abuse",
    "security_incident",
    "resolved",
    "other",
)
ReasonCode = Literal[REASON_CODES]  # type: ignore[valid-type]
REASON_DESCRIPTION = "Why (recorded in the audit event): " + ", ".join(REASON_CODES)


class ReasonCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason_code: ReasonCode = Field(description=REASON_DESCRIPTION)


class RotateIn(ReasonCodeIn):
    #: None: REALNAME_API_KEY_ROTATION_OVERLAP_HOURS.
    overlap_hours: int | None = Field(
        default=None,
        ge=0,
        le=24 * 30,
        description="How long the old key keeps working beside the new one (0 = stop it now)",
    )


class ApiKeyOut(BaseModel):
    id: str
    prefix: str
    state: Literal["active", "expiring", "expired", "revoked"]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class ClientWithKeysOut(ClientOut):
    keys: list[ApiKeyOut]


class ApiKeyCreated(ApiKeyOut):
    client_id: str
    #: The plain key, shown this once.
    api_key: str


class ApiKeyRevoked(ApiKeyOut):
    client_id: str
    usable_keys_left: int
    #: Set when this was the client's last working key.
    warning: str | None


class ApiKeyRotated(BaseModel):
    previous: ApiKeyOut
    key: ApiKeyCreated
