"""The hashing ceiling: raw argon2id hashes per second at the service's profile, one process per
core, nothing else running. Registration can at best reach this rate (one hash each)."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from app.crypto import Argon2Profile
from bench.stats import Summary, summarise

#: About the size of ``app.identity.hash_identity_input`` for a typical person.
SAMPLE_INPUT = b'["\xe5\xbc\xa0\xe4\xb8\x89","11010519491231002X","+8613800138000"]' * 2


def _hash_until(
    profile: Argon2Profile, start_at: float, end_at: float
) -> tuple[list[float], float]:
    """Hash until ``end_at`` (wall clock, shared by all processes); return the durations of the
    hashes that finished inside ``[start_at, end_at]`` (unbiased at both edges) and the CPU
    seconds they took. Hashes before ``start_at`` warm the process up."""
    hasher = profile.hasher()
    durations: list[float] = []
    cpu = 0.0
    while True:
        began = time.time()
        if began >= end_at:
            return durations, cpu
        tick, cpu_tick = time.perf_counter(), time.process_time()
        hasher.hash(SAMPLE_INPUT)
        took, cpu_took = time.perf_counter() - tick, time.process_time() - cpu_tick
        if start_at <= time.time() <= end_at:
            durations.append(took)
            cpu += cpu_took


def measure_argon2(
    profile: Argon2Profile,
    seconds: float,
    processes: int | None = None,
    at_start: Callable[[], object] | None = None,
) -> tuple[Summary, float]:
    """Hashes per second across ``processes`` (default: every core) for ``seconds``; the
    latencies are those of single hashes. Also returns the CPU seconds the counted hashes took
    (a cost per hash that other load on the machine barely changes). ``at_start`` is called
    when the counted window opens (after the processes' start-up and warm-up hashes), so that
    a CPU meter started there sees the hashing alone."""
    processes = processes or os.cpu_count() or 1
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        # Spawn and import first, so the clock does not include interpreter start-up.
        list(pool.map(abs, range(processes)))
        start_at = time.time() + 1.0
        end_at = start_at + seconds
        futures = [pool.submit(_hash_until, profile, start_at, end_at) for _ in range(processes)]
        if at_start is not None:
            time.sleep(max(0.0, start_at - time.time()))
            at_start()
        results = [f.result(timeout=seconds + 60) for f in futures]
    durations = [d for got, _ in results for d in got]
    return summarise(durations, seconds), sum(cpu for _, cpu in results)
