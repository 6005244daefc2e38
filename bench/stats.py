"""Percentiles and per-scenario summaries (pure; no I/O)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks.

    The same definition as NumPy's default (``method="linear"``). ``nan`` for no values.
    """
    if not 0 <= q <= 100:
        raise ValueError("q must lie in [0, 100]")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Summary:
    """What one timed run measured. Latencies in milliseconds."""

    requests: int
    ok: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    #: Answers that shed load (503 ``overloaded``), where a run counts them: neither ok nor
    #: errors; their latency percentiles.
    shed: int = 0
    shed_p50_ms: float = math.nan
    shed_p99_ms: float = math.nan

    @property
    def shed_share(self) -> float:
        """Shed answers as a share of all answers (0 when none)."""
        return self.shed / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(
    latencies_s: Sequence[float],
    seconds: float,
    *,
    errors: int = 0,
    statuses: dict[str, int] | None = None,
    error_samples: list[str] | None = None,
    shed_s: Sequence[float] = (),
) -> Summary:
    """Summarise completed requests. ``rps`` counts successful requests only; ``shed_s`` are
    the latencies of answers that shed load (counted apart, neither ok nor errors)."""
    ms = [v * 1000 for v in latencies_s]
    shed_ms = [v * 1000 for v in shed_s]
    ok = len(ms)
    return Summary(
        requests=ok + errors + len(shed_ms),
        ok=ok,
        errors=errors,
        seconds=round(seconds, 3),
        rps=ok / seconds if seconds > 0 else 0.0,
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms) if ms else math.nan,
        mean_ms=sum(ms) / ok if ok else math.nan,
        statuses=dict(statuses or {}),
        error_samples=list(error_samples or []),
        shed=len(shed_ms),
        shed_p50_ms=percentile(shed_ms, 50),
        shed_p99_ms=percentile(shed_ms, 99),
    )
