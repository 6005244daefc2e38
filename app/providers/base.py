"""What every adapter that calls a cloud provider shares, whatever the provider and whatever the
adapter does (a verifier's check, a sender's SMS).

:class:`Credentials`, :class:`CredentialEnv`
    An access key (id, secret, optional STS session token) and the environment variables it is
    read from.
:class:`ProviderAdapter`
    The constructor every adapter takes beyond its credentials and its own settings: the shared
    :class:`httpx.AsyncClient`, the endpoint host, the retry policy
    (:class:`~app.providers.RetryPolicy`), the circuit breaker
    (:class:`~app.providers.breaker.CircuitBreaker`), the clock, the timeouts and the scheme.
    The per-provider bases (:class:`app.providers.tencent.TencentAdapter`,
    :class:`app.providers.aliyun.AliyunAdapter`) add the credentials and one signed call.
:class:`CodeTable`
    A provider's result or error codes mapped to our outcome, as data: exact codes, code
    families (the part before the first ``.``), raw prefixes, and the outcome of anything else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypedDict, TypeVar

import httpx

from app.providers import DEFAULT_TIMEOUT, RetryPolicy, optional_env, read_env
from app.providers.breaker import CircuitBreaker

__all__ = ["AdapterOptions", "CodeTable", "CredentialEnv", "Credentials", "ProviderAdapter"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key: its id (sent in the clear), its secret (only ever used as HMAC key
    material) and, with temporary STS credentials, the session token."""

    key_id: str
    secret: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CredentialEnv:
    """The names of the environment variables a provider's :class:`Credentials` come from."""

    key_id: str
    secret: str
    token: str

    def read(
        self,
        env: Mapping[str, str],
        also: Sequence[str] = (),
        defaults: Mapping[str, str] | None = None,
    ) -> tuple[Credentials, dict[str, str]]:
        """The credentials, and the values of the adapter's own variables ``also``.

        Raises:
            ValueError: naming every missing variable (never a value).
        """
        values = read_env(env, [self.key_id, self.secret, *also], defaults)
        credentials = Credentials(
            values[self.key_id], values[self.secret], optional_env(env, self.token)
        )
        return credentials, values


class AdapterOptions(TypedDict, total=False):
    """The keyword arguments every adapter takes; see :class:`ProviderAdapter`. (``max_attempts``
    is apart: verifiers retry by default, senders never do.)"""

    backoff_base: float
    breaker: CircuitBreaker | None
    sleep: Callable[[float], Awaitable[None]]
    clock: Callable[[], float]
    timeout: httpx.Timeout
    scheme: str


class ProviderAdapter:
    """The base of every adapter that calls a cloud provider.

    Args:
        client: The shared :class:`httpx.AsyncClient`; its lifetime belongs to the caller.
        credentials: The access key.
        host: The API host.
        max_attempts: Calls in all, retries of transport errors included (at least 1). Senders
            keep 1: the outbox worker owns their retries.
        backoff_base: Seconds; see :class:`~app.providers.RetryPolicy`.
        breaker: The circuit breaker; a new ``CircuitBreaker()`` if ``None``. Share one between
            adapters that call the same upstream if wanted.
        sleep: Awaited for back-off delays; tests inject a fake.
        clock: Current Unix time for the signature's timestamp; tests inject a fake.
        timeout: Per-request timeouts.
        scheme: ``"https"``; tests may use ``"http"``.

    Raises:
        ValueError: an empty key id or secret, ``max_attempts`` < 1 or ``backoff_base`` < 0.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        credentials: Credentials,
        host: str,
        max_attempts: int = 1,
        backoff_base: float = 0.2,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        scheme: str = "https",
    ) -> None:
        if not credentials.key_id or not credentials.secret:
            raise ValueError("the access key id and secret must not be empty")
        self._client = client
        self._credentials = credentials
        self._host = host
        self._retry = RetryPolicy(max_attempts, backoff_base, sleep)
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self._clock = clock
        self._timeout = timeout
        self._scheme = scheme

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self._host!r}, breaker={self.breaker!r})"


@dataclass(frozen=True)
class CodeTable(Generic[T]):
    """A provider's codes and what each means for us, looked up in this order:

    1. ``exact``: the code itself;
    2. ``families``: the code's family, the part before its first ``.`` (``"AuthFailure"`` for
       ``"AuthFailure.SignatureExpire"`` and for ``"AuthFailure"`` itself);
    3. ``prefixes``: the first whose text the code starts with (``"isv.ACCOUNT_"``);
    4. ``default``: anything else, and a missing code (``None``).
    """

    default: T
    exact: Mapping[str, T] = field(default_factory=dict)
    families: Mapping[str, T] = field(default_factory=dict)
    prefixes: Sequence[tuple[str, T]] = ()

    def __call__(self, code: str | None) -> T:
        if code is None:
            return self.default
        if code in self.exact:
            return self.exact[code]
        family = code.split(".", 1)[0]
        if family in self.families:
            return self.families[family]
        for prefix, value in self.prefixes:
            if code.startswith(prefix):
                return value
        return self.default

    def extended(self, exact: Mapping[str, T]) -> CodeTable[T]:
        """This table with more exact codes, which win over the ones it has."""
        return CodeTable(self.default, {**self.exact, **exact}, self.families, self.prefixes)
