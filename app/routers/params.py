"""Query parameter types shared by routers."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: Any) -> Any:
    """Only the RFC 3339 date-times the schema promises (pydantic alone also takes "0", a Unix
    time, or a date without a time)."""
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time, such as 2026-01-31T08:00:00Z")
    return value


DateTimeQuery = Annotated[datetime, BeforeValidator(_rfc3339)]
