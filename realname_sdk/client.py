"""Clients of the integrator API: :class:`RealnameClient` (blocking) and
:class:`AsyncRealnameClient` (``async``/``await``).

Both take the service's base URL and an API key (``rn_test_…`` for the sandbox, ``rn_live_…`` in
production) and expose the same methods with the same arguments, results and exceptions; the
request building, retry decisions and response parsing they share live in one place
(:mod:`realname_sdk._protocol`), so the two cannot drift apart.

Personal data (name, ID number, phone) only ever travels in request bodies, never in a URL, and
the SDK never logs a body. Results are small frozen dataclasses (:mod:`realname_sdk.models`);
errors are :class:`~realname_sdk.errors.RealnameError` and its subclasses. A failure to reach the
service at all surfaces as the underlying :class:`httpx.TransportError` once retries are spent.

Retries: a request that never reached the service is retried (``max_retries`` times, with
jittered back-off); a request whose answer was lost or that met a 502/503/504 is retried only if
repeating it cannot have a second effect: reads, introspection, revocation, erasure, and creating
a verification (which always carries an ``Idempotency-Key``, so a repeat returns the first
answer). Code submissions, resends and token issuance are not repeated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import httpx

from realname_sdk import _protocol as proto
from realname_sdk.errors import WaitTimeout
from realname_sdk.models import Introspection, SandboxMessage, Token, Verification

__all__ = ["AsyncRealnameClient", "RealnameClient"]

T = TypeVar("T")
logger = logging.getLogger("realname_sdk")


class _Poll:
    """Deadline bookkeeping shared by the ``wait_for_*`` loops of both clients."""

    def __init__(self, timeout: float, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.deadline = time.monotonic() + timeout
        self.interval = interval

    def pause(self) -> float | None:
        """Seconds to sleep before the next poll, or ``None`` once the deadline has passed."""
        remaining = self.deadline - time.monotonic()
        return None if remaining <= 0 else min(self.interval, remaining)


def _status_timeout(verification_id: str, last: Verification, timeout: float) -> WaitTimeout:
    return WaitTimeout(
        f"verification {verification_id} still {last.status!r} after {timeout:g} s",
        verification_id=verification_id,
        last_status=last.status,
    )


def _code_timeout(verification_id: str, timeout: float) -> WaitTimeout:
    return WaitTimeout(
        f"no new code reached the sandbox inbox of {verification_id} within {timeout:g} s",
        verification_id=verification_id,
        last_status=None,
    )


def _newest_code(messages: list[SandboxMessage], skip: int) -> str | None:
    if len(messages) <= skip:
        return None
    return messages[0].code


class _ClientBase:
    """Configuration shared by both clients (no I/O)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float, max_retries: int) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// URL")
        if not api_key:
            raise ValueError("api_key must not be empty")
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._max_retries = max_retries

    @property
    def base_url(self) -> str:
        """The service's base URL, without a trailing slash."""
        return self._base_url

    def __repr__(self) -> str:
        # Never the API key.
        return f"{type(self).__name__}(base_url={self._base_url!r})"

    def _log(self, request: proto.ApiRequest[Any], attempt: int, outcome: str) -> None:
        # Method, path (ids only, never personal data) and outcome; never bodies or headers.
        logger.debug(
            "realname %s %s -> %s (attempt %d)", request.method, request.path, outcome, attempt + 1
        )


class RealnameClient(_ClientBase):
    """Blocking client of the integrator API.

    Args:
        base_url: The service's base URL, e.g. ``https://realname.example.com``.
        api_key: The client's API key (``rn_test_…`` or ``rn_live_…``).
        timeout: Seconds for each HTTP attempt (connect, read, write, pool).
        http_client: An ``httpx.Client`` to send through (proxies, mTLS, a mock transport in
            tests). The caller keeps ownership: :meth:`close` does not close it. Without one, the
            client creates and owns its own.
        max_retries: How many times a retriable failure is tried again (see the module notes).

    Use it as a context manager, or call :meth:`close`, to release connections.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        http_client: httpx.Client | None = None,
        max_retries: int = 2,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.Client()

    def close(self) -> None:
        """Release connections (the ``http_client`` passed in, if any, stays open)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, request: proto.ApiRequest[T]) -> T:
        """Send a prepared request (retrying as allowed) and return its parsed result."""
        attempt = 0
        while True:
            wire = request.to_httpx(
                self._http, self._base_url, self._api_key, timeout=self._timeout
            )
            try:
                response = self._http.send(wire)
            except httpx.TransportError as exc:
                self._log(request, attempt, type(exc).__name__)
                delay = proto.retry_delay(request, attempt, self._max_retries, error=exc)
                if delay is None:
                    raise
            else:
                self._log(request, attempt, str(response.status_code))
                delay = proto.retry_delay(request, attempt, self._max_retries, response=response)
                if delay is None:
                    return proto.handle_response(request, response)
            attempt += 1
            time.sleep(delay)

    def create_verification(
        self,
        *,
        external_user_id: str,
        real_name: str,
        id_number: str,
        phone: str,
        policy_version: str = "2026-01",
        level: str | None = None,
        idempotency_key: str | None = None,
    ) -> Verification:
        """Start verifying an end user's real-name identity (``POST /v1/verifications``).

        Args:
            external_user_id: Your id for the end user (1-200 characters).
            real_name: The person's name as on the ID card.
            id_number: The 18-character resident ID number.
            phone: A mainland China mobile number (the SMS code goes there at L2 and above).
            policy_version: The published collection-rules version the person consented to.
            level: ``"L1"``, ``"L2"`` or ``"L3"``; ``None`` takes the client's default level.
            idempotency_key: Makes the call safe to repeat: the service answers a repeat with the
                first answer. A fresh uuid4 is used when ``None`` (and reused by this call's own
                retries); pass your own to make retries across process restarts safe too.

        Returns:
            The new verification, usually ``pending`` while checks run in the background.

        Raises:
            RealnameError: e.g. ``invalid_id_number``, ``invalid_phone``, ``consent_required``,
                ``identity_in_use``, ``idempotency_conflict`` (same key, other body).
            RateLimited: a per-client, per-phone or per-identity limit was hit.
        """
        return self._send(
            proto.create_verification(
                external_user_id=external_user_id,
                real_name=real_name,
                id_number=id_number,
                phone=phone,
                policy_version=policy_version,
                level=level,
                idempotency_key=idempotency_key,
            )
        )

    def get_verification(self, verification_id: str) -> Verification:
        """Read a verification (``GET /v1/verifications/{id}``).

        Raises:
            RealnameError: ``not_found`` for an id that is not this client's.
        """
        return self._send(proto.get_verification(verification_id))

    def wait_for_status(
        self,
        verification_id: str,
        *,
        leave: str | Iterable[str] = ("pending",),
        timeout: float = 30.0,
        interval: float = 0.5,
    ) -> Verification:
        """Poll a verification until its status is no longer one of ``leave``.

        Args:
            verification_id: The verification to watch.
            leave: The statuses to wait out (a single status may be given as a string).
            timeout: Seconds to keep polling.
            interval: Seconds between polls.

        Returns:
            The first verification read whose status is not in ``leave``.

        Raises:
            WaitTimeout: the status was still in ``leave`` after ``timeout`` seconds.
        """
        leaving = proto.leave_set(leave)
        poll = _Poll(timeout, interval)
        while True:
            verification = self.get_verification(verification_id)
            if verification.status not in leaving:
                return verification
            pause = poll.pause()
            if pause is None:
                raise _status_timeout(verification_id, verification, timeout)
            time.sleep(pause)

    def submit_code(self, verification_id: str, code: str) -> Verification:
        """Submit the SMS code the person received (``POST …/sms-code``).

        Never retried automatically: every submission counts as an attempt.

        Returns:
            The verification, ``verified`` when the code was right and no other check is open.

        Raises:
            RealnameError: ``code_incorrect`` (``body["attempts_remaining"]`` says how many are
                left), ``code_expired``, ``attempts_exhausted``, ``invalid_code_format``,
                ``verification_not_awaiting_code``.
            RateLimited: too many submissions.
        """
        return self._send(proto.submit_code(verification_id, code))

    def resend_code(self, verification_id: str) -> None:
        """Send a new SMS code; the previous one stops working (``POST …/sms-code/resend``).

        Raises:
            RateLimited: the per-phone SMS limit (1/min, 5/h, 10/day) was hit;
                ``retry_after`` says when another code can be sent.
            RealnameError: ``verification_not_awaiting_code``, ``verification_expired``.
        """
        self._send(proto.resend_code(verification_id))

    def issue_token(self, verification_id: str) -> Token:
        """Issue a short-lived service token for a verified verification
        (``POST /v1/verifications/{id}/tokens``).

        Raises:
            NotVerified: the verification is not ``verified``; ``missing_checks`` says what is
                still open.
        """
        return self._send(proto.issue_token(verification_id))

    def introspect(self, token: str) -> Introspection:
        """Ask the service whether a token is active right now (RFC 7662).

        Unlike offline verification this sees revocation at once (admin action, erasure,
        correction). A token that is expired, revoked, malformed or another client's gives
        ``Introspection(active=False)``.
        """
        return self._send(proto.introspect(token))

    def revoke(self, token: str) -> None:
        """Revoke a token (RFC 7009). Succeeds for unknown and already revoked tokens too."""
        self._send(proto.revoke(token))

    def erase(self, verification_id: str) -> Verification:
        """Erase a verification's personal data (``DELETE /v1/verifications/{id}``).

        Returns:
            The verification with status ``erased`` and an :class:`~realname_sdk.models.Erasure`
            receipt tied to the audit chain. Tokens issued for it stop being active.
        """
        return self._send(proto.erase(verification_id))

    def sandbox_messages(self, verification_id: str) -> list[SandboxMessage]:
        """The SMS messages the sandbox "delivered" for a verification, newest first.

        Test-mode keys only (``sandbox_only`` otherwise).
        """
        return self._send(proto.sandbox_messages(verification_id))

    def wait_for_sandbox_code(
        self, verification_id: str, *, skip: int = 0, timeout: float = 10.0, interval: float = 0.25
    ) -> str:
        """Wait for a code to reach the sandbox inbox and return it (test mode only).

        Args:
            verification_id: The verification the code was sent for.
            skip: How many messages are already known (pass 1 after one resend to wait for the
                new code rather than return the old one).
            timeout: Seconds to keep polling.
            interval: Seconds between polls.

        Raises:
            WaitTimeout: no new message with a code arrived in time.
        """
        poll = _Poll(timeout, interval)
        while True:
            code = _newest_code(self.sandbox_messages(verification_id), skip)
            if code is not None:
                return code
            pause = poll.pause()
            if pause is None:
                raise _code_timeout(verification_id, timeout)
            time.sleep(pause)


class AsyncRealnameClient(_ClientBase):
    """The ``async`` twin of :class:`RealnameClient`: the same methods, awaited.

    Args:
        base_url: The service's base URL, e.g. ``https://realname.example.com``.
        api_key: The client's API key (``rn_test_…`` or ``rn_live_…``).
        timeout: Seconds for each HTTP attempt.
        http_client: An ``httpx.AsyncClient`` to send through; the caller keeps ownership.
        max_retries: How many times a retriable failure is tried again.

    Use it as an async context manager, or call :meth:`aclose`. Works under asyncio and trio.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        http_client: httpx.AsyncClient | None = None,
        max_retries: int = 2,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries)
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient()

    async def aclose(self) -> None:
        """Release connections (the ``http_client`` passed in, if any, stays open)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, request: proto.ApiRequest[T]) -> T:
        """Send a prepared request (retrying as allowed) and return its parsed result."""
        attempt = 0
        while True:
            wire = request.to_httpx(
                self._http, self._base_url, self._api_key, timeout=self._timeout
            )
            try:
                response = await self._http.send(wire)
            except httpx.TransportError as exc:
                self._log(request, attempt, type(exc).__name__)
                delay = proto.retry_delay(request, attempt, self._max_retries, error=exc)
                if delay is None:
                    raise
            else:
                self._log(request, attempt, str(response.status_code))
                delay = proto.retry_delay(request, attempt, self._max_retries, response=response)
                if delay is None:
                    return proto.handle_response(request, response)
            attempt += 1
            await anyio.sleep(delay)

    async def create_verification(
        self,
        *,
        external_user_id: str,
        real_name: str,
        id_number: str,
        phone: str,
        policy_version: str = "2026-01",
        level: str | None = None,
        idempotency_key: str | None = None,
    ) -> Verification:
        """Start verifying an end user; see :meth:`RealnameClient.create_verification`."""
        return await self._send(
            proto.create_verification(
                external_user_id=external_user_id,
                real_name=real_name,
                id_number=id_number,
                phone=phone,
                policy_version=policy_version,
                level=level,
                idempotency_key=idempotency_key,
            )
        )

    async def get_verification(self, verification_id: str) -> Verification:
        """Read a verification; see :meth:`RealnameClient.get_verification`."""
        return await self._send(proto.get_verification(verification_id))

    async def wait_for_status(
        self,
        verification_id: str,
        *,
        leave: str | Iterable[str] = ("pending",),
        timeout: float = 30.0,  # noqa: ASYNC109 (the sync twin's signature; polling needs a deadline)
        interval: float = 0.5,
    ) -> Verification:
        """Poll until the status leaves ``leave``; see :meth:`RealnameClient.wait_for_status`."""
        leaving = proto.leave_set(leave)
        poll = _Poll(timeout, interval)
        while True:
            verification = await self.get_verification(verification_id)
            if verification.status not in leaving:
                return verification
            pause = poll.pause()
            if pause is None:
                raise _status_timeout(verification_id, verification, timeout)
            await anyio.sleep(pause)

    async def submit_code(self, verification_id: str, code: str) -> Verification:
        """Submit the SMS code; see :meth:`RealnameClient.submit_code`."""
        return await self._send(proto.submit_code(verification_id, code))

    async def resend_code(self, verification_id: str) -> None:
        """Send a new SMS code; see :meth:`RealnameClient.resend_code`."""
        await self._send(proto.resend_code(verification_id))

    async def issue_token(self, verification_id: str) -> Token:
        """Issue a service token; see :meth:`RealnameClient.issue_token`."""
        return await self._send(proto.issue_token(verification_id))

    async def introspect(self, token: str) -> Introspection:
        """Introspect a token (RFC 7662); see :meth:`RealnameClient.introspect`."""
        return await self._send(proto.introspect(token))

    async def revoke(self, token: str) -> None:
        """Revoke a token (RFC 7009); see :meth:`RealnameClient.revoke`."""
        await self._send(proto.revoke(token))

    async def erase(self, verification_id: str) -> Verification:
        """Erase a verification's personal data; see :meth:`RealnameClient.erase`."""
        return await self._send(proto.erase(verification_id))

    async def sandbox_messages(self, verification_id: str) -> list[SandboxMessage]:
        """The sandbox inbox of a verification; see :meth:`RealnameClient.sandbox_messages`."""
        return await self._send(proto.sandbox_messages(verification_id))

    async def wait_for_sandbox_code(
        self,
        verification_id: str,
        *,
        skip: int = 0,
        timeout: float = 10.0,  # noqa: ASYNC109 (the sync twin's signature)
        interval: float = 0.25,
    ) -> str:
        """Wait for a sandbox code; see :meth:`RealnameClient.wait_for_sandbox_code`."""
        poll = _Poll(timeout, interval)
        while True:
            code = _newest_code(await self.sandbox_messages(verification_id), skip)
            if code is not None:
                return code
            pause = poll.pause()
            if pause is None:
                raise _code_timeout(verification_id, timeout)
            await anyio.sleep(pause)
