"""Events and webhook endpoints: request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.text import SafeStr

EventType = Literal[
    "verification.awaiting_code",
    "verification.verified",
    "verification.rejected",
    "verification.needs_review",
    "verification.expired",
    "verification.locked",
    "verification.revoked",
    "verification.erased",
    "token.revoked",
    "issuance.suspended",
    "issuance.resumed",
    "ping",
]


#: What an endpoint may subscribe to (a ``ping`` goes only where it is sent).
SubscribableType = Literal[
    "verification.awaiting_code",
    "verification.verified",
    "verification.rejected",
    "verification.needs_review",
    "verification.expired",
    "verification.locked",
    "verification.revoked",
    "verification.erased",
    "token.revoked",
    "issuance.suspended",
    "issuance.resumed",
]


class EventData(BaseModel):
    verification_id: str | None = None
    external_user_id: str | None = Field(
        default=None, description="The client's own user id; `[erased]` after an erasure"
    )
    status: str | None = None
    reason: str | None = Field(default=None, description="A reason code")
    level: str | None = None
    jti: str | None = Field(default=None, description="`token.revoked` only: the token's id")


class EventOut(BaseModel):
    """An event: a pointer to what changed, never personal data."""

    id: str = Field(description="`evt_…`; also the `webhook-id` of its deliveries")
    type: EventType
    created_at: datetime
    livemode: bool
    data: EventData


class EventPage(BaseModel):
    data: list[EventOut]
    has_more: bool
    next_after: str | None = Field(
        default=None, description="Pass as `after` to read on (the last event's id)"
    )


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: SafeStr = Field(description="https URL that receives the events (at most 2000 characters)")
    events: list[SubscribableType] | None = Field(
        default=None,
        min_length=1,
        max_length=20,
        description="Event types to receive (all but `ping` when omitted)",
    )


class EndpointOut(BaseModel):
    id: str
    url: str
    events: list[str] | None = Field(description="Subscribed event types; null for all")
    disabled: bool = Field(description="Turned off after failing for 5 days straight")
    created_at: datetime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="`whsec_…`; shown only in this answer")


class EndpointList(BaseModel):
    data: list[EndpointOut]


class SecretOut(BaseModel):
    id: str
    secret: str = Field(description="The new `whsec_…` secret; the old one signs for 24 h more")
    previous_secret_expires_at: datetime


class PingOut(BaseModel):
    event_id: str


class AttemptOut(BaseModel):
    id: str
    delivery_id: str
    event_id: str
    event_type: str
    attempted_at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status, if it answered")
    latency_ms: int
    error: str | None = Field(
        description="timeout, connection_error, redirect_refused, http_<status>, ..."
    )
    response_excerpt: str | None = Field(description="At most 200 bytes of the answer")
    next_retry_at: datetime | None


class AttemptList(BaseModel):
    data: list[AttemptOut]


class AdminEndpointOut(EndpointOut):
    client_id: str
    failing_since: datetime | None


class AdminDeliveryOut(BaseModel):
    id: str
    client_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    completed_at: datetime | None
    created_at: datetime


class AdminDeliveryList(BaseModel):
    data: list[AdminDeliveryOut]
