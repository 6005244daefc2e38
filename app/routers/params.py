"""Request parameters shared by routers: query types, and JSON bodies read by routes that
resolve no FastAPI dependencies."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ValidationError

from app.errors import ProblemError

M = TypeVar("M", bound=BaseModel)


async def json_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``, refused as FastAPI refuses a body parameter: 422
    for a missing or invalid body (``loc`` under ``body``), 400 ``malformed_json`` for broken
    JSON. For a route that reads its body itself, after authenticating the client."""
    raw = await request.body()
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        data = json.loads(raw)
    except ValueError:
        raise ProblemError("malformed_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """What OpenAPI says of a body that :func:`json_body` reads (``openapi_extra``)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


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
