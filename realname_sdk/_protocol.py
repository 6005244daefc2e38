"""The HTTP protocol of the integrator API, without I/O.

Everything both clients share lives here as pure functions: building each request
(:class:`ApiRequest`), deciding whether an attempt is retried (:func:`retry_delay`), and turning a
response into a typed result or an exception (:func:`handle_response`). The sync and async
clients differ only in how they send a request and how they sleep.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from realname_sdk._version import __version__
from realname_sdk.errors import NotVerified, RateLimited, RealnameError, UnexpectedResponse
from realname_sdk.models import Introspection, SandboxMessage, Token, Verification

T = TypeVar("T")

#: Retry pauses grow as BACKOFF_BASE * 2**attempt, capped at BACKOFF_CAP (full jitter).
BACKOFF_BASE = 0.25
BACKOFF_CAP = 4.0
#: The longest ``Retry-After`` the client waits out by itself before a retry.
RETRY_AFTER_CAP = 10.0
#: Statuses after which an idempotent request is tried again.
RETRY_STATUSES = frozenset({502, 503, 504})
USER_AGENT = f"realname-sdk-python/{__version__}"


@dataclass(frozen=True, slots=True)
class ApiRequest(Generic[T]):
    """One call of the integrator API, ready to send (and to send again, unchanged, on a retry).

    The JSON body can carry personal data (a name, an ID number, a phone number): it is kept out
    of ``repr`` and only ever travels in the body, never in the URL.
    """

    method: str
    path: str
    #: Turns a successful response body into the result.
    parse: Callable[[Any], T] = field(repr=False)
    #: Statuses that count as success.
    ok: frozenset[int] = frozenset({200})
    json: Mapping[str, Any] | None = field(default=None, repr=False)
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Safe to send more than once: a retry cannot have a second effect.
    idempotent: bool = False

    def to_httpx(
        self, http: httpx.Client | httpx.AsyncClient, base_url: str, api_key: str, *, timeout: float
    ) -> httpx.Request:
        """Build the ``httpx.Request`` (the client's own default headers are merged in)."""
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json, application/problem+json",
            "User-Agent": USER_AGENT,
            **self.headers,
        }
        return http.build_request(
            self.method,
            base_url + self.path,
            params=dict(self.params) if self.params is not None else None,
            json=dict(self.json) if self.json is not None else None,
            headers=headers,
            timeout=timeout,
        )


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return quote(value, safe="")


def _none(_: Any) -> None:
    return None


# -- requests -------------------------------------------------------------------------------------


def create_verification(
    *,
    external_user_id: str,
    real_name: str,
    id_number: str,
    phone: str,
    policy_version: str,
    level: str | None,
    idempotency_key: str | None,
) -> ApiRequest[Verification]:
    """``POST /v1/verifications``; a fresh uuid4 ``Idempotency-Key`` when none is given."""
    body: dict[str, Any] = {
        "external_user_id": external_user_id,
        "real_name": real_name,
        "id_number": id_number,
        "phone": phone,
        "consent": {"policy_version": policy_version},
    }
    if level is not None:
        body["level"] = level
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    return ApiRequest(
        "POST",
        "/v1/verifications",
        Verification.from_json,
        ok=frozenset({200, 201}),
        json=body,
        headers={"Idempotency-Key": key},
        idempotent=True,
    )


def get_verification(verification_id: str) -> ApiRequest[Verification]:
    """``GET /v1/verifications/{id}``."""
    path = f"/v1/verifications/{_segment(verification_id, 'verification_id')}"
    return ApiRequest("GET", path, Verification.from_json, idempotent=True)


def submit_code(verification_id: str, code: str) -> ApiRequest[Verification]:
    """``POST /v1/verifications/{id}/sms-code``. Never retried: every attempt is counted."""
    path = f"/v1/verifications/{_segment(verification_id, 'verification_id')}/sms-code"
    return ApiRequest("POST", path, Verification.from_json, json={"code": code})


def resend_code(verification_id: str) -> ApiRequest[None]:
    """``POST /v1/verifications/{id}/sms-code/resend``. Never retried: it is rate limited."""
    path = f"/v1/verifications/{_segment(verification_id, 'verification_id')}/sms-code/resend"
    return ApiRequest("POST", path, _none, ok=frozenset({200, 202}))


def issue_token(verification_id: str) -> ApiRequest[Token]:
    """``POST /v1/verifications/{id}/tokens``. Not idempotent: each call issues a new token."""
    path = f"/v1/verifications/{_segment(verification_id, 'verification_id')}/tokens"
    return ApiRequest("POST", path, Token.from_json, ok=frozenset({200, 201}))


def introspect(token: str) -> ApiRequest[Introspection]:
    """``POST /v1/tokens/introspect`` (RFC 7662). The token goes in the body, never the URL."""
    return ApiRequest(
        "POST",
        "/v1/tokens/introspect",
        Introspection.from_json,
        json={"token": token},
        idempotent=True,
    )


def revoke(token: str) -> ApiRequest[None]:
    """``POST /v1/tokens/revoke`` (RFC 7009): revoking twice is the same as revoking once."""
    return ApiRequest("POST", "/v1/tokens/revoke", _none, json={"token": token}, idempotent=True)


def erase(verification_id: str) -> ApiRequest[Verification]:
    """``DELETE /v1/verifications/{id}``."""
    path = f"/v1/verifications/{_segment(verification_id, 'verification_id')}"
    return ApiRequest("DELETE", path, Verification.from_json, idempotent=True)


def sandbox_messages(verification_id: str) -> ApiRequest[list[SandboxMessage]]:
    """``GET /v1/sandbox/messages?verification_id=…`` (test-mode keys only)."""
    _segment(verification_id, "verification_id")
    return ApiRequest(
        "GET",
        "/v1/sandbox/messages",
        SandboxMessage.list_from_json,
        params={"verification_id": verification_id},
        idempotent=True,
    )


# -- responses ------------------------------------------------------------------------------------


def handle_response(request: ApiRequest[T], response: httpx.Response) -> T:
    """The result of a final response, or the :class:`RealnameError` it stands for."""
    if response.status_code not in request.ok:
        raise error_from_response(response)
    if request.parse is _none:
        return request.parse(None)
    try:
        return request.parse(response.json())
    except (ValueError, TypeError, KeyError) as exc:
        raise _unexpected(response, f"The answer is not in the documented shape ({exc})") from None


def error_from_response(response: httpx.Response) -> RealnameError:
    """The exception for a problem+json (or any other) error response."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return _unexpected(response, f"HTTP {response.status_code} without a problem document")
    status = response.status_code
    code: str = body["code"]
    raw_title, raw_detail = body.get("title"), body.get("detail")
    title = raw_title if isinstance(raw_title, str) else code
    detail = raw_detail if isinstance(raw_detail, str) else title
    if status == 429 or code == "rate_limited":
        return RateLimited(
            status, code, title, detail, body, retry_after=_retry_after(response, body)
        )
    if code == "verification_not_verified":
        return NotVerified(
            status, code, title, detail, body, missing_checks=_names(body.get("missing_checks"))
        )
    return RealnameError(status, code, title, detail, body)


def _unexpected(response: httpx.Response, detail: str) -> UnexpectedResponse:
    return UnexpectedResponse(
        response.status_code,
        "unexpected_response",
        "The answer is not in the documented shape",
        detail,
        {},
    )


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("type"), str):
            out.append(item["type"])
    return tuple(out)


def _retry_after(response: httpx.Response, body: Mapping[str, Any] | None = None) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or an HTTP date), else the body's member."""
    header = response.headers.get("Retry-After")
    if header is not None:
        header = header.strip()
        if header.isdigit():
            return float(header)
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(0.0, when.timestamp() - time.time())
    value = (body or {}).get("retry_after")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return None


# -- retries --------------------------------------------------------------------------------------


def retry_delay(
    request: ApiRequest[Any],
    attempt: int,
    max_retries: int,
    *,
    response: httpx.Response | None = None,
    error: Exception | None = None,
) -> float | None:
    """Seconds to wait before trying ``request`` again, or ``None`` to stop here.

    A request that never reached the service (connection refused, connect timeout) is always
    retried. Anything else is retried only when ``request.idempotent``: after a lost answer, a
    gateway error (502/503/504) or ``idempotency_in_progress`` (the first attempt still running).
    A 429 is never retried here: its ``Retry-After`` can be minutes, which is the caller's call.
    """
    if attempt >= max_retries:
        return None
    if error is not None:
        never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
        if not (never_sent or (request.idempotent and isinstance(error, httpx.TransportError))):
            return None
        return _backoff(attempt)
    if response is None or not request.idempotent:
        return None
    if response.status_code in RETRY_STATUSES:
        after = _retry_after(response)
        if after is None:
            return _backoff(attempt)
        return after if after <= RETRY_AFTER_CAP else None
    if response.status_code == 409 and _code(response) == "idempotency_in_progress":
        return _backoff(attempt)
    return None


def _backoff(attempt: int) -> float:
    cap = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
    return random.uniform(cap / 2, cap)  # noqa: S311 (jitter, not a secret)


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


# -- polling --------------------------------------------------------------------------------------


def leave_set(leave: str | Iterable[str]) -> Collection[str]:
    """Normalise ``wait_for_status``'s ``leave`` (a lone string is one status, not its letters)."""
    return frozenset((leave,) if isinstance(leave, str) else leave)
