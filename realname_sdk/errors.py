"""Exceptions raised by :class:`~realname_sdk.RealnameClient` and its async twin.

Every error the service answers is RFC 9457 ``application/problem+json`` with a stable ``code``;
branch on :attr:`RealnameError.code`, never on ``title`` or ``detail`` (those are for people and
may be reworded). The service never echoes request values in error bodies, so these exceptions
are safe to log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "NotVerified",
    "RateLimited",
    "RealnameError",
    "UnexpectedResponse",
    "WaitTimeout",
]


class RealnameError(Exception):
    """The service refused a request (any 4xx or 5xx answer).

    Attributes:
        status: The HTTP status code.
        code: The stable machine-readable error code, e.g. ``invalid_phone``, ``not_found``,
            ``code_incorrect``. See the service's README for the full table.
        title: A short human-readable summary of the code.
        detail: A human-readable explanation of this occurrence.
        body: The whole decoded problem document (``{}`` when the body was not JSON), including
            extension members such as ``errors`` or ``attempts_remaining``.
    """

    def __init__(
        self, status: int, code: str, title: str, detail: str, body: Mapping[str, Any]
    ) -> None:
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.body = body
        super().__init__(status, code, title, detail, body)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r})"

    @property
    def field_errors(self) -> tuple[Mapping[str, Any], ...]:
        """Per-field validation errors (``{"pointer", "code", "detail"}``), if any were sent."""
        errors = self.body.get("errors")
        if not isinstance(errors, list):
            return ()
        return tuple(e for e in errors if isinstance(e, Mapping))


class RateLimited(RealnameError):
    """A rate limit refused the request (HTTP 429, code ``rate_limited``).

    Attributes:
        retry_after: Seconds to wait before trying again, from the ``Retry-After`` header (or the
            body's ``retry_after`` member); ``None`` if the service did not say.
    """

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        body: Mapping[str, Any],
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, title, detail, body)
        self.retry_after = retry_after


class NotVerified(RealnameError):
    """A token was requested for a verification that is not ``verified`` (HTTP 409).

    Attributes:
        missing_checks: The checks that have not passed yet (for example ``("sms_otp",)``), as
            the service names them; empty if it did not say.
    """

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        body: Mapping[str, Any],
        *,
        missing_checks: tuple[str, ...] = (),
    ) -> None:
        super().__init__(status, code, title, detail, body)
        self.missing_checks = missing_checks


class UnexpectedResponse(RealnameError):
    """The answer was not in the documented shape (not JSON, a required member missing, or an
    error that is not problem+json, such as an HTML page from a proxy).

    ``code`` is ``unexpected_response``; ``status`` is the HTTP status that came back.
    """


class WaitTimeout(TimeoutError):
    """A ``wait_for_*`` helper gave up before the awaited state was reached.

    Attributes:
        verification_id: The verification that was being watched.
        last_status: The last status seen, or ``None`` if none was read.
    """

    def __init__(self, message: str, *, verification_id: str, last_status: str | None) -> None:
        super().__init__(message)
        self.verification_id = verification_id
        self.last_status = last_status
