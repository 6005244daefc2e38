"""Signed calls to the Chinese cloud providers, shared by the verifiers and senders that use them.

:mod:`app.providers.tencent`
    Tencent Cloud API 3.0: ``TC3-HMAC-SHA256`` signing and one signed JSON ``POST``.
:mod:`app.providers.aliyun`
    Alibaba Cloud OpenAPI: ``ACS3-HMAC-SHA256`` (signature V3) signing and one signed RPC ``POST``.

This module holds what both need: the typed errors a call raises, a bounded retry policy, the
reading of credentials from the environment, and the screening of values taken from a provider
response before they may be stored.

Errors
------
:class:`ProviderTransportError` (retriable)
    No answer: a timeout (``reason == "timeout"``), a connection, network or protocol error, or an
    HTTP 502, 503 or 504 from a gateway (``reason == "unavailable"``). ``reached`` says whether
    the provider may nevertheless have acted on the request (a read timed out): a caller of a
    non-idempotent API (SMS ``SendSms``) must then not retry blindly.
:class:`ProviderResponseError` (not retriable)
    An answer that is not in the documented shape: not JSON, not an object, too large.

Neither carries request data: their messages are fixed texts, and the ``httpx`` exception they
replace is not chained (its text may quote the request).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import httpx

__all__ = [
    "DEFAULT_TIMEOUT",
    "ProviderError",
    "ProviderResponseError",
    "ProviderTransportError",
    "RetryPolicy",
    "json_object",
    "mainland_mobile",
    "optional_env",
    "post",
    "read_env",
    "safe_code",
    "screened_reference",
    "uuid_reference",
]

T = TypeVar("T")

#: Connect within 2 s; read, write and wait for a pooled connection 5 s each.
DEFAULT_TIMEOUT: Final = httpx.Timeout(5.0, connect=2.0)

# A provider answer is a few hundred bytes; anything much larger is not one.
_MAX_BODY_BYTES: Final = 64 * 1024
_GATEWAY_STATUSES: Final = frozenset({502, 503, 504})
_NETWORK_ERRORS: Final = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)
_MAX_BACKOFF_SECONDS: Final = 10.0
# Error codes are identifiers, e.g. "AuthFailure.SignatureFailure", "isv.BUSINESS_LIMIT_CONTROL".
_CODE: Final = re.compile(r"[A-Za-z0-9._-]{1,100}")
_PRINTABLE_REFERENCE: Final = re.compile(r"[\x21-\x7e]{1,128}")
_MIN_SCREENED_CHARS: Final = 4
_MAINLAND_MOBILE: Final = re.compile(r"\+86(1[0-9]{10})")


class _RequestLogWithoutQuery(logging.Filter):
    """Drops the query string from ``httpx``'s request log line (``HTTP Request: POST <url>``).

    Some provider APIs take their parameters in the query (Alibaba Cloud ``SendSms``, as its
    official SDK sends it): whatever level an embedding application gives the ``httpx`` logger,
    those parameters must not reach a log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_with(query=None) if isinstance(arg, httpx.URL) else arg
                for arg in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_RequestLogWithoutQuery())


class ProviderError(Exception):
    """A provider call produced no usable answer.

    Attributes:
        reason: A stable, PII-free code (see the subclasses).
        status: The HTTP status, when there was a response.
    """

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ProviderTransportError(ProviderError):
    """No answer: ``reason`` is ``"timeout"`` or ``"unavailable"``. Worth retrying, unless the
    call is not idempotent and ``reached`` is true.

    Attributes:
        reached: The request may have reached the provider and been acted on (a read timed out
            or the connection broke after the request was written). ``False`` when it
            certainly was not (no connection, no pooled connection, a gateway's 502/503/504).
    """

    def __init__(self, reason: str, *, status: int | None = None, reached: bool = False) -> None:
        super().__init__(reason, status=status)
        self.reached = reached


class ProviderResponseError(ProviderError):
    """An answer that is not in the documented shape (``reason == "bad_response"``)."""

    def __init__(self, *, status: int | None = None) -> None:
        super().__init__("bad_response", status=status)


async def post(
    client: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    request_timeout: httpx.Timeout,
) -> httpx.Response:
    """Send one ``POST`` and translate transport failures into :class:`ProviderTransportError`.

    Args:
        client: The shared client; its lifetime belongs to the caller.
        url: The endpoint. It must never contain personal data.
        content: The exact body bytes that were signed.
        headers: The signed headers.
        request_timeout: Per-request timeouts.

    Returns:
        The response, whatever its status, except a gateway error.

    Raises:
        ProviderTransportError: timeout, connection/network/protocol error, or HTTP 502/503/504.
        httpx.HTTPError: any other transport problem (a configuration error, e.g. an
            unsupported scheme), unchanged.
    """
    try:
        response = await client.post(
            url, content=content, headers=dict(headers), timeout=request_timeout
        )
    except (httpx.ConnectTimeout, httpx.PoolTimeout):
        raise ProviderTransportError("timeout") from None
    except httpx.TimeoutException:
        raise ProviderTransportError("timeout", reached=True) from None
    except (httpx.ConnectError, httpx.ProxyError):
        raise ProviderTransportError("unavailable") from None
    except _NETWORK_ERRORS:
        raise ProviderTransportError("unavailable", reached=True) from None
    if response.status_code in _GATEWAY_STATUSES:
        raise ProviderTransportError("unavailable", status=response.status_code)
    return response


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response body as a JSON object.

    Raises:
        ProviderResponseError: the body is larger than 64 KiB, not JSON, or not an object.
    """
    if len(response.content) > _MAX_BODY_BYTES:
        raise ProviderResponseError(status=response.status_code)
    try:
        document = response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from it
        raise ProviderResponseError(status=response.status_code) from None
    if not isinstance(document, dict):
        raise ProviderResponseError(status=response.status_code)
    return document


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential back-off and jitter: the one back-off of every adapter
    that calls out (cloud verifiers, the HTTP registry and gateway verifiers).

    Attributes:
        max_attempts: Calls in all, the first included (at least 1).
        backoff_base: Seconds; the delay before retry *n* is drawn from
            ``[b * 2**(n-1) / 2, b * 2**(n-1)]``, capped at 10 s.
        sleep: Awaited for each delay; tests inject a fake.
        retry_on: The exceptions that are retried; :class:`ProviderTransportError` by default.

    Note that a request that timed out may still have been processed (and billed) by the
    provider: neither provider offers request de-duplication for these APIs.
    """

    max_attempts: int = 3
    backoff_base: float = 0.2
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    retry_on: tuple[type[Exception], ...] = (ProviderTransportError,)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base < 0:
            raise ValueError("backoff_base must not be negative")

    async def run(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Await ``attempt()`` until it returns, retrying the errors of ``retry_on``.

        Raises:
            ProviderTransportError: every attempt failed; the last error is raised (or whichever
                ``retry_on`` names).
            Exception: anything else ``attempt`` raises, at once.
        """
        for number in range(1, self.max_attempts + 1):
            if number > 1:
                await self.sleep(self.backoff(number - 1))
            try:
                return await attempt()
            except self.retry_on:
                if number == self.max_attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def backoff(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1-based): exponential, with "equal jitter"."""
        ceiling = min(_MAX_BACKOFF_SECONDS, self.backoff_base * 2.0 ** (retry - 1))
        # Jitter spreads out retries of many workers; it needs no cryptographic randomness.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311


def read_env(
    env: Mapping[str, str], required: Sequence[str], defaults: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Read configuration variables, stripped of surrounding whitespace.

    Args:
        env: The environment (``os.environ`` or a test mapping).
        required: The variables to read. An empty or blank value counts as missing.
        defaults: Values for variables that may be left unset.

    Returns:
        Every name in ``required`` mapped to its value.

    Raises:
        ValueError: naming every missing variable (never any value).
    """
    values: dict[str, str] = {}
    missing: list[str] = []
    for name in required:
        value = env.get(name, "").strip()
        if value:
            values[name] = value
        elif defaults is not None and name in defaults:
            values[name] = defaults[name]
        else:
            missing.append(name)
    if missing:
        raise ValueError("missing environment variable(s): " + ", ".join(missing))
    return values


def optional_env(env: Mapping[str, str], name: str) -> str | None:
    """A variable that may be left unset (e.g. an STS session token): stripped, or ``None``."""
    return env.get(name, "").strip() or None


def mainland_mobile(phone: str) -> str | None:
    """The 11-digit national number of a mainland-China mobile in E.164, else ``None``.

    ``"+8613800138000"`` -> ``"13800138000"``. The carrier checks of both providers accept only
    mainland mobiles in this form.
    """
    match = _MAINLAND_MOBILE.fullmatch(phone)
    return match.group(1) if match else None


def safe_code(value: object) -> str | None:
    """``value`` if it looks like a provider error code (safe to log and compare), else ``None``."""
    if isinstance(value, str) and _CODE.fullmatch(value):
        return value
    return None


def uuid_reference(value: object) -> str | None:
    """A request id that is a UUID, in canonical form, else ``None``.

    Only a UUID is kept as a verifier's provider reference: it cannot echo personal data.
    """
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def screened_reference(value: object, *, forbidden: Iterable[str]) -> str | None:
    """``value`` if it is 1-128 visible ASCII characters containing none of ``forbidden``.

    Senders use it for message ids (``BizId``, ``SerialNo``), which are not UUIDs: ``forbidden``
    holds the recipient's digits and the template parameters, so a reference that echoes them is
    dropped rather than stored. Items shorter than 4 characters are too common to screen for.
    """
    if not isinstance(value, str) or not _PRINTABLE_REFERENCE.fullmatch(value):
        return None
    if any(len(item) >= _MIN_SCREENED_CHARS and item in value for item in forbidden):
        return None
    return value
