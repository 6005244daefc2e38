"""Where the machine's CPU went during a run: this bench process (the load generator), the
server's process tree, PostgreSQL and Redis, and everything else (other programs on the
machine). Linux ``/proc``."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds spent on all cores other than idle and iowait since boot."""
    fields = _PROC.joinpath("stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / _TICK


#: Process names counted as the database side (PostgreSQL backends, Redis).
DATABASE_COMMANDS = frozenset({"postgres", "redis-server"})


def _process_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (ppid, user+system CPU seconds, command name) for every process we can read."""
    table: dict[int, tuple[int, float, str]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = entry.joinpath("stat").read_text()
        except OSError:
            continue
        head, _, tail = stat.rpartition(")")
        rest = tail.split()
        # After "pid (comm)": state ppid ... utime(12th) stime(13th) of the remainder.
        cpu = (int(rest[11]) + int(rest[12])) / _TICK
        table[int(entry.name)] = (int(rest[1]), cpu, head.partition("(")[2])
    return table


def tree_pids(root: int, table: dict[int, tuple[int, float, str]]) -> set[int]:
    """``root`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def _is_ours(pid: int, name: str, database: str | None) -> bool:
    """Redis, PostgreSQL's shared background processes, and the backends of ``database``
    (a backend's title names its database; other databases' backends are someone else's)."""
    if name != "postgres":
        return name in DATABASE_COMMANDS
    try:
        title = _PROC.joinpath(str(pid), "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if "127.0.0.1(" not in title and "[local]" not in title:
        return True  # postmaster, checkpointer, WAL writer, autovacuum, ...
    return database is not None and f" {database} " in title


#: The server's process (with its children), or several servers' processes.
ServerPids = int | tuple[int, ...] | None


def _cpu_by_pid(
    server_pid: ServerPids, database: str | None
) -> tuple[dict[int, float], dict[int, float]]:
    """CPU seconds so far of the server trees' processes and of the database processes."""
    table = _process_table()
    roots = (server_pid,) if isinstance(server_pid, int) else server_pid or ()
    server = {pid for root in roots for pid in tree_pids(root, table)}
    db = {p for p, (_, _, name) in table.items() if _is_ours(p, name, database)}
    return {p: table[p][1] for p in server}, {p: table[p][1] for p in db}


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used in between by processes alive at the end (new ones count from zero; ones that
    exited meanwhile are lost, which can only under-count)."""
    return sum(max(cpu - before.get(pid, 0.0), 0.0) for pid, cpu in after.items())


def _self_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuShare:
    """Shares of the machine's capacity (cores x wall time), in percent, and the CPU seconds
    behind them (which, divided by requests, are a cost that outside load barely changes)."""

    bench: float
    server: float
    database: float
    other: float
    idle: float
    seconds: dict[str, float] = field(default_factory=dict)

    def ms_per(self, part: str, requests: int) -> float | None:
        """CPU milliseconds of ``part`` ("bench", "server", "database") per request."""
        if requests <= 0 or part not in self.seconds:
            return None
        return 1000 * self.seconds[part] / requests

    def short(self) -> str:
        return f"{self.bench:.0f}/{self.server:.0f}/{self.database:.0f}/{self.other:.0f}"


class CpuMeter:
    """Snapshot now; :meth:`share` later gives the split of the interval."""

    def __init__(self, server_pid: ServerPids, database: str | None = None) -> None:
        self.server_pid = server_pid
        self.database = database
        self.cores = os.cpu_count() or 1
        self._wall = time.monotonic()
        self._busy = _machine_busy_seconds()
        self._self = _self_seconds()
        self._server, self._database = _cpu_by_pid(server_pid, database)

    def share(self, server_seconds: float | None = None) -> CpuShare:
        """The split since construction; ``server_seconds`` overrides the measured server CPU
        (for work done by processes that have exited meanwhile)."""
        capacity = max((time.monotonic() - self._wall) * self.cores, 1e-9)
        busy = _machine_busy_seconds() - self._busy
        bench = _self_seconds() - self._self
        wall = time.monotonic() - self._wall
        server_now, database_now = _cpu_by_pid(self.server_pid, self.database)
        server = _delta(self._server, server_now) if server_seconds is None else server_seconds
        database = _delta(self._database, database_now)
        other = max(busy - bench - server - database, 0.0)
        return CpuShare(
            bench=round(100 * bench / capacity, 1),
            server=round(100 * server / capacity, 1),
            database=round(100 * database / capacity, 1),
            other=round(100 * other / capacity, 1),
            idle=round(max(100 - 100 * busy / capacity, 0.0), 1),
            seconds={
                "wall": round(wall, 3),
                "bench": round(bench, 3),
                "server": round(server, 3),
                "database": round(database, 3),
                "other": round(other, 3),
            },
        )


async def wait_for_quiet(
    busy_below: float = 20.0, sample: float = 2.0, within: float = 60.0
) -> float:
    """Wait (at most ``within`` s) until the machine is less than ``busy_below`` percent busy
    over ``sample`` seconds; return the last busy percentage seen."""
    import asyncio

    cores = os.cpu_count() or 1
    deadline = time.monotonic() + within
    while True:
        busy0, wall0 = _machine_busy_seconds(), time.monotonic()
        await asyncio.sleep(sample)
        busy = 100 * (_machine_busy_seconds() - busy0) / ((time.monotonic() - wall0) * cores)
        if busy < busy_below or time.monotonic() > deadline:
            return round(busy, 1)
