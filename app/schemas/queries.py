"""Query parameters of the admin lists, as models shared by the JSON API and the admin UI.

Both faces parse their query strings through these models, so a value the API refuses with
422 the UI refuses too (and neither passes an unbounded number or date on to the database):
the UI's queries (whole days, empty values from forms meaning "any") are turned into the API's
filter models, which validate again.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, model_validator

from app.schemas.text import NoControls, SafeStr

StatusName = Literal[
    "pending",
    "awaiting_code",
    "verified",
    "rejected",
    "needs_review",
    "expired",
    "locked",
    "revoked",
    "erased",
]
#: What every client id looks like (the admin pages check path parameters against it too).
CLIENT_ID_PATTERN = r"^cli_[0-9a-f]{32}$"
ClientId = Annotated[str, Field(pattern=CLIENT_ID_PATTERN, max_length=36), NoControls()]
#: An opaque page marker the service issued (URL-safe base64).
Cursor = Annotated[str, Field(pattern=r"^[A-Za-z0-9_=-]{1,400}$", max_length=400), NoControls()]
#: audit_events.seq is an INTEGER column: PostgreSQL refuses a larger argument outright.
Seq = Annotated[int, Field(ge=1, le=2**31 - 1)]
AuditAction = Annotated[str, Field(pattern=r"^[a-z_.]{1,64}$", max_length=64), NoControls()]
SubjectId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", max_length=64), NoControls()]

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
#: Day bounds of the UI's date pickers: the day after the last one must still be a date.
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9999, 12, 30)


def _rfc3339(value: Any) -> Any:
    """Only the RFC 3339 date-times the schema promises (pydantic alone also takes "0", a Unix
    time, or a date without a time)."""
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time, such as 2026-01-31T08:00:00Z")
    return value


def _in_utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("must be a date-time that exists in UTC") from None


DateTimeQuery = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc)]
Day = Annotated[date, Field(ge=FIRST_DAY, le=LAST_DAY)]


class _Blankable(BaseModel):
    """A UI query: HTML forms send an empty value for "any", which means no filter."""

    @model_validator(mode="before")
    @classmethod
    def _blank_is_none(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != ""}
        return data


class VerificationFilters(BaseModel):
    """``GET /v1/admin/verifications`` and the UI's lists."""

    status: StatusName | None = None
    client_id: ClientId | None = None
    created_from: DateTimeQuery | None = None
    created_to: DateTimeQuery | None = None
    cursor: Cursor | None = None
    limit: int = Field(default=50, ge=1, le=100)


class AuditFilters(BaseModel):
    """``GET /v1/admin/audit-events`` and the UI's audit log."""

    before_seq: Seq | None = None
    action: AuditAction | None = None
    subject_id: SubjectId | None = None
    limit: int = Field(default=100, ge=1, le=500)


class UiVerificationQuery(_Blankable):
    """The UI's verification list: whole days from date pickers, the "to" day inclusive."""

    status: StatusName | None = None
    client_id: ClientId | None = None
    created_from: Day | None = None
    created_to: Day | None = None
    cursor: Cursor | None = None

    def filters(self, limit: int) -> VerificationFilters:
        def start(day: date) -> datetime:
            return datetime.combine(day, time.min, tzinfo=UTC)

        return VerificationFilters(
            status=self.status,
            client_id=self.client_id,
            created_from=start(self.created_from) if self.created_from else None,
            created_to=start(self.created_to + timedelta(days=1)) if self.created_to else None,
            cursor=self.cursor,
            limit=limit,
        )


class UiAuditQuery(_Blankable):
    """The UI's audit log (``before`` is the API's ``before_seq``)."""

    action: AuditAction | None = None
    subject_id: SubjectId | None = None
    before: Seq | None = None

    def filters(self, limit: int) -> AuditFilters:
        return AuditFilters(
            before_seq=self.before, action=self.action, subject_id=self.subject_id, limit=limit
        )


class UiQueueQuery(_Blankable):
    """The UI's review queue: a page marker, and what was just done (for the notice)."""

    cursor: Cursor | None = None
    done: Literal["approve", "reject", "revoke", "erase"] | None = None
    v: Annotated[str, Field(pattern=r"^ver_[0-9a-f]{32}$"), NoControls()] | None = None


class UiSignInQuery(_Blankable):
    expired: SafeStr | None = Field(default=None, max_length=8)
    signed_out: SafeStr | None = Field(default=None, max_length=8)
