"""A small circuit breaker for adapters that call out to a provider (verifiers and senders).

States
------
``closed``
    Calls go through. Each failure recorded adds to a count of *consecutive* failures; a
    success resets it. At ``failure_threshold`` the breaker opens.
``open``
    Calls are refused (:meth:`CircuitBreaker.allow` returns ``False``) until ``reset_timeout``
    seconds have passed since it opened.
``half_open``
    After the cool-down, exactly one *trial* call is allowed. Its success closes the breaker;
    its failure opens it again for another full cool-down. Other calls are refused while the
    trial runs. A trial that never reports back (its task was cancelled) is given up after
    ``reset_timeout`` seconds and another trial is allowed, so the breaker cannot stay stuck.

Usage::

    if not breaker.allow():
        return CheckResult.unavailable("circuit_open")  # or a sender's retriable refusal
    ...  # call the provider
    breaker.record_success()  # or breaker.record_failure()

Every method is synchronous, short and holds a :class:`threading.Lock`, so one breaker can be
shared by any number of asyncio tasks (and threads). Time comes from an injectable monotonic
``clock`` so tests advance time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

__all__ = ["BreakerState", "CircuitBreaker", "call_through"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> half-open after a cool-down -> closed.

    Args:
        failure_threshold: Consecutive failures that open the breaker (at least 1).
        reset_timeout: Seconds the breaker stays open before allowing a trial call (> 0).
        clock: Monotonic time source in seconds; :func:`time.monotonic` by default.

    Raises:
        ValueError: a parameter is out of range.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout <= 0:
            raise ValueError("reset_timeout must be positive")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_started_at: float | None = None

    @property
    def state(self) -> BreakerState:
        """The current state. An open breaker whose cool-down has passed reports ``half_open``."""
        with self._lock:
            if self._state is BreakerState.OPEN and self._cooled_down():
                return BreakerState.HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """Ask to make one call; ``False`` means do not call the provider.

        In the half-open state a ``True`` answer is the single trial permit: the caller must
        report the call's outcome with :meth:`record_success` or :meth:`record_failure`.
        """
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            now = self._clock()
            if self._state is BreakerState.OPEN:
                if not self._cooled_down():
                    return False
                self._state = BreakerState.HALF_OPEN
            elif (
                self._trial_started_at is not None
                and now - self._trial_started_at < self.reset_timeout
            ):
                return False  # a trial is in flight
            self._trial_started_at = now
            return True

    def record_success(self) -> None:
        """Report a call that reached a working provider: closes the breaker."""
        with self._lock:
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._trial_started_at = None

    def record_failure(self) -> None:
        """Report a call that failed because of the provider (down, timed out, garbled)."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures < self.failure_threshold:
                    return
            elif self._state is BreakerState.OPEN:
                return  # a call that started before the breaker opened; the cool-down stands
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._trial_started_at = None

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_timeout

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self.state.value}, failure_threshold={self.failure_threshold},"
            f" reset_timeout={self.reset_timeout})"
        )


_T = TypeVar("_T")


async def call_through(
    breaker: CircuitBreaker,
    call: Callable[[], Awaitable[_T]],
    upstream_failed: Callable[[_T], bool],
) -> _T | None:
    """Run ``call`` behind ``breaker``.

    Returns:
        ``None`` while the breaker is open (nothing is called); otherwise the answer, recorded
        as a failure when ``upstream_failed(answer)`` says the provider is not working (down,
        timed out, garbled), and as a success otherwise (a definite answer, even a negative
        one, comes from a working provider).

    Raises:
        Exception: whatever ``call`` raises, recorded as a failure.
    """
    if not breaker.allow():
        return None
    try:
        answer = await call()
    except Exception:
        breaker.record_failure()
        raise
    if upstream_failed(answer):
        breaker.record_failure()
    else:
        breaker.record_success()
    return answer
