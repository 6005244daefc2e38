"""The circuit breaker's state machine, driven by a hand-moved clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.providers.breaker import BreakerState, CircuitBreaker


@dataclass
class FakeClock:
    """A monotonic clock the test moves by hand."""

    now: float = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """The breaker's time source."""
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    """A breaker that opens after 3 failures and cools down for 10 s."""
    return CircuitBreaker(failure_threshold=3, reset_timeout=10.0, clock=clock)


def _trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        assert breaker.allow()
        breaker.record_failure()


def test_starts_closed_and_allows_calls(breaker: CircuitBreaker) -> None:
    """A new breaker is closed and lets calls through."""
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_stays_closed_below_threshold(breaker: CircuitBreaker) -> None:
    """N-1 consecutive failures keep it closed."""
    breaker.record_failure()
    breaker.record_failure()

    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    """The Nth consecutive failure opens it and calls are refused."""
    _trip(breaker)

    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    """Failures separated by a success are not consecutive."""
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()

    assert breaker.state is BreakerState.CLOSED


def test_refuses_until_cool_down_has_passed(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """An open breaker refuses calls for the whole reset_timeout."""
    _trip(breaker)
    clock.now += 9.999

    assert not breaker.allow()
    assert breaker.state is BreakerState.OPEN


def test_half_open_allows_exactly_one_trial(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """After the cool-down one trial call is allowed; others wait for its outcome."""
    _trip(breaker)
    clock.now += 10.0
    assert breaker.state is BreakerState.HALF_OPEN

    first, second = breaker.allow(), breaker.allow()

    assert (first, second) == (True, False)


def test_trial_success_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """A successful trial closes the breaker with a fresh failure count."""
    _trip(breaker)
    clock.now += 10.0
    breaker.allow()

    breaker.record_success()

    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_trial_failure_reopens_for_a_full_cool_down(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    """A failed trial opens the breaker again, counted from the trial's failure."""
    _trip(breaker)
    clock.now += 10.0
    breaker.allow()
    clock.now += 2.0

    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN
    clock.now += 9.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


def test_abandoned_trial_is_replaced_after_a_cool_down(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    """A trial that never reports back (cancelled task) does not block the breaker forever."""
    _trip(breaker)
    clock.now += 10.0
    assert breaker.allow()
    clock.now += 9.0
    assert not breaker.allow()
    clock.now += 1.0

    assert breaker.allow()


def test_late_failure_does_not_extend_open_state(breaker: CircuitBreaker, clock: FakeClock) -> None:
    """A failure reported by a call that began before opening leaves the cool-down as it was."""
    _trip(breaker)
    clock.now += 5.0
    breaker.record_failure()
    clock.now += 5.0

    assert breaker.allow()


@pytest.mark.parametrize(
    ("threshold", "timeout"), [(0, 10.0), (1, 0.0), (1, -1.0)], ids=["threshold", "zero", "neg"]
)
def test_rejects_invalid_parameters(threshold: int, timeout: float) -> None:
    """A threshold below one or a non-positive cool-down is refused."""
    with pytest.raises(ValueError, match="must"):
        CircuitBreaker(failure_threshold=threshold, reset_timeout=timeout)


def test_default_clock_is_monotonic() -> None:
    """Without an injected clock the breaker works on real monotonic time."""
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60.0)

    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN
    assert "open" in repr(breaker)
