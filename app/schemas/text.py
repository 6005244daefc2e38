"""The one rule every string a request carries passes: no control characters.

Bytes in flight cannot be checked (a JSON ``\\u0000`` escape may be split across body chunks, a
form value is percent-encoded), so the rule applies to decoded values, here, once: every request
body, form and query model types its strings as :data:`SafeStr`. Refused: C0 and C1 controls
(NUL included), DEL, the invisible format controls that hide or reorder text in logs and admin
pages (zero-width characters and marks, line and paragraph separators, bidi embeddings,
overrides and isolates, word joiners, the byte-order mark) and lone surrogates (which no
database can store as text).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

#: The same rule for the OpenAPI schema (ECMA-262 syntax, which Python's ``re`` also reads).
#: Lone surrogates are left out: no valid UTF-8 text holds one, and regex engines that work on
#: Unicode scalar values (Rust's, for one) refuse the range.
_FORMAT_CONTROLS = r"\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
NO_CONTROLS_PATTERN = rf"^[^\x00-\x1f\x7f-\x9f{_FORMAT_CONTROLS}]*$"
_REFUSED = re.compile(rf"[\x00-\x1f\x7f-\x9f{_FORMAT_CONTROLS}\ud800-\udfff]")
MESSAGE = "must not contain control characters"


def has_controls(value: str) -> bool:
    """True when ``value`` holds a character :data:`SafeStr` refuses."""
    return _REFUSED.search(value) is not None


def _check(value: str) -> str:
    if has_controls(value):
        raise ValueError(MESSAGE)  # names the rule, never the value
    return value


class NoControls:
    """Pydantic metadata: validate with :func:`_check`, and say so in the JSON schema."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        target = handler.resolve_ref_schema(json_schema)
        # In an allOf: a field's own ``pattern`` (a schema has one) stays where it is.
        target.setdefault("allOf", []).append({"pattern": NO_CONTROLS_PATTERN})
        return json_schema


#: A request string: any text without control characters. A type with a ``pattern`` of its own
#: is written ``Annotated[str, Field(pattern=...), NoControls()]`` (in that order, so that the
#: JSON schema keeps both patterns when the field is optional).
SafeStr = Annotated[str, NoControls()]
