from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.text import SafeStr


class CodeSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"code": "123456"}]})

    code: SafeStr = Field(
        min_length=1, max_length=32, description="The six-digit code from the SMS"
    )


class SandboxMessageOut(BaseModel):
    id: str
    verification_id: str
    to: str = Field(description="The masked phone number")
    body: str
    code: str | None = Field(
        description="The one-time code the body carries (test mode only), so a script need not "
        "parse the text",
        examples=["123456"],
    )
    created_at: datetime
    expires_at: datetime


class SandboxMessages(BaseModel):
    data: list[SandboxMessageOut]
