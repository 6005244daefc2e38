"""`realname serve --workers N`: each worker listens on a socket of its own (``SO_REUSEPORT``),
so the kernel spreads connections over the workers, and a worker that dies leaves the others
answering while it is replaced.

What the kernel sees is read from ``/proc``: the listening and connected TCP sockets of the
port, and which process holds each (by inode)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.support import REALNAME, launch, service_env

LISTEN, ESTABLISHED = "0A", "01"


def _tcp_sockets(port: int, state: str) -> set[str]:
    """Inodes of this machine's TCP sockets with local ``port`` in ``state`` (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:] if Path(table).exists() else []
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == state:
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else []:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def _listeners(supervisor: int, port: int) -> dict[int, set[str]]:
    """Worker pid -> the listening sockets of ``port`` it holds."""
    listening = _tcp_sockets(port, LISTEN)
    held = {pid: _socket_inodes(pid) & listening for pid in _children(supervisor)}
    return {pid: inodes for pid, inodes in held.items() if inodes}


def _wait_for(condition: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """`realname serve --workers 2` on the suite's database: (base URL, port, supervisor pid),
    once both workers listen."""
    service = launch(settings, log_path=tmp_path / "serve.log", args=["--workers", "2"])
    port = int(service.base.rsplit(":", 1)[1])
    try:
        service.wait_ready()
        _wait_for(lambda: len(_listeners(service.proc.pid, port)) == 2)
        yield service.base, port, service.proc.pid
    finally:
        service.stop()


def test_each_worker_listens_on_its_own_socket(two_workers: tuple[str, int, int]) -> None:
    """Two workers, two listening sockets of the port, one held by each (uvicorn's own
    multi-process mode has one socket, held by the supervisor and every worker)."""
    _, port, supervisor = two_workers
    listeners = _listeners(supervisor, port)
    assert len(listeners) == 2
    first, second = listeners.values()
    assert len(first) == len(second) == 1
    assert first != second
    # The supervisor accepts nothing, so it holds no listening socket of the port either.
    assert not _socket_inodes(supervisor) & _tcp_sockets(port, LISTEN)


def test_connections_are_spread_over_both_workers(two_workers: tuple[str, int, int]) -> None:
    """32 keep-alive connections (a client pool, a load balancer's) are spread over both
    workers by the kernel, and every one is answered."""
    base, port, supervisor = two_workers
    clients = [httpx.Client(base_url=base, timeout=10) for _ in range(32)]
    try:
        assert all(c.get("/healthz").status_code == 200 for c in clients)
        established = _tcp_sockets(port, ESTABLISHED)
        per_worker = {
            pid: len(_socket_inodes(pid) & established) for pid in _listeners(supervisor, port)
        }
        assert sum(per_worker.values()) == 32, per_worker
        assert min(per_worker.values()) > 0, per_worker
    finally:
        for c in clients:
            c.close()


def test_a_dead_worker_leaves_the_other_answering_and_is_replaced(
    two_workers: tuple[str, int, int],
) -> None:
    """A killed worker's socket closes with it: new connections go to the live worker (none
    is refused or left unanswered), and the supervisor starts a worker that listens again."""
    base, port, supervisor = two_workers
    victim = next(iter(_listeners(supervisor, port)))
    os.kill(victim, signal.SIGKILL)
    _wait_for(lambda: victim not in _listeners(supervisor, port), within=10)
    for _ in range(20):
        with httpx.Client(base_url=base, timeout=10) as fresh:
            assert fresh.get("/healthz").status_code == 200
    _wait_for(lambda: len(_listeners(supervisor, port)) == 2, within=60)
    assert victim not in _listeners(supervisor, port)


def test_a_taken_port_stops_start_up_at_once(settings: Settings, tmp_path: Path) -> None:
    """Another program listening on the port (without SO_REUSEPORT): `serve --workers 2` exits
    with uvicorn's start-up failure code instead of starting workers that cannot listen."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [REALNAME, "serve", "--port", str(port), "--workers", "2"],
            env=service_env(settings),
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 3, done.stderr[-2000:]
    assert b"cannot listen" in done.stdout + done.stderr
