"""The single exception type raised by the identity field parsers."""

from __future__ import annotations


class InvalidField(ValueError):
    """An identity field failed canonicalisation or validation.

    Attributes:
        field: The API field name (``"id_number"``, ``"phone"`` or ``"real_name"``).
        code: A stable, machine-readable error code (``"invalid_id_number"``, ...).
        detail: Human text naming the rule that failed. It never contains the submitted value
            or any part of it, so it is safe to put into HTTP error bodies and logs.

    ``str(exc)`` is ``detail``.
    """

    def __init__(self, field: str, code: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return self.detail
