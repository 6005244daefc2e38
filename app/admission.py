"""Admission control: a per-process cap on requests of one kind in flight.

Registrations are bound by argon2id (a pool of ``REALNAME_HASH_WORKERS`` threads) and by their
event-loop work. Past saturation, every request admitted only lengthens the queue in front of
the hash pool, so every caller's latency grows without bound. A :class:`Gate` admits at most
``limit`` requests at once in this process and refuses the next one at once, before anything
is read or written, so that the refused caller can retry (``Retry-After``) while those admitted
keep a bounded wait: about ``limit`` divided by the process's registrations per second.

The count is per process (one event loop, no lock needed): with several processes behind a
load balancer, the cluster admits about ``processes x limit``.
"""

from __future__ import annotations

from app import metrics

__all__ = ["Gate"]


class Gate:
    """At most ``limit`` holders at once (0: no limit); the one past it is refused.

    Used from one event loop: :meth:`try_enter` checks and counts without awaiting in between.
    Refusals are counted in ``realname_admission_refusals_total{gate=name}``, places held in
    ``realname_admission_in_flight{gate=name}``.
    """

    def __init__(self, name: str, limit: int, *, retry_after: int = 1) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.name = name
        self.limit = limit
        self.retry_after = retry_after
        self.in_flight = 0
        #: Refusals since this gate was made.
        self.refused = 0
        self._refusals = metrics.ADMISSION_REFUSALS.labels(name)
        self._gauge = metrics.ADMISSION_IN_FLIGHT.labels(name)

    def try_enter(self) -> bool:
        """Take a place and answer True, or count a refusal and answer False when none is free.
        Every True must be matched by one :meth:`leave`."""
        if self.limit and self.in_flight >= self.limit:
            self.refused += 1
            self._refusals.inc()
            return False
        self.in_flight += 1
        self._gauge.inc()
        return True

    def leave(self) -> None:
        """Give back the place :meth:`try_enter` took."""
        self.in_flight -= 1
        self._gauge.dec()
