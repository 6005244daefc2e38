from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class PolicyOut(BaseModel):
    version: str
    sha256: str
    body: str
    published_at: datetime
