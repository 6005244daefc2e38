"""Helpers shared by tests: a real `realname serve` process, database dumps, canaries."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import anyio
import httpx
import redis
from sqlalchemy import text
from sqlmodel import SQLModel

from app.hotcache import Invalidations
from app.runtime import Runtime
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
REALNAME = str(Path(sys.executable).with_name("realname"))

#: The prefix of the suite's own knobs (``REALNAME_TEST_DATABASE_URL``,
#: ``REALNAME_TEST_REDIS_URL``): the only ``REALNAME_*`` variables the tests take from the shell.
TEST_KNOBS = "REALNAME_TEST_"


def ambient_settings(environ: Mapping[str, str]) -> list[str]:
    """The ``REALNAME_*`` variables in ``environ`` that would configure the service (everything
    but the suite's own knobs): the suite drops them, so a developer's shell cannot change what
    the tests run against."""
    return [k for k in environ if k.startswith("REALNAME_") and not k.startswith(TEST_KNOBS)]


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a child `realname` process sharing the test database and keys (no
    ``REALNAME_*`` variable of the shell, the suite's knobs included, reaches it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALNAME_")}
    env.update(
        REALNAME_ENV="dev",
        REALNAME_DATABASE_URL=settings.database_url,
        REALNAME_REGISTRY_URL=settings.registry_url,
        REALNAME_SECRET_KEY=settings.secret_key.get_secret_value(),
        REALNAME_BLIND_INDEX_KEYS=settings.blind_index_keys.get_secret_value(),
        REALNAME_IDENTITY_HASH_MEMORY_KIB=str(settings.identity_hash_memory_kib),
        REALNAME_IDENTITY_HASH_TIME_COST=str(settings.identity_hash_time_cost),
        REALNAME_DEV_KEYS_FILE=str(settings.dev_keys_file),
        REALNAME_INLINE_CHECKS=str(settings.inline_checks).lower(),
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def refused_url() -> Iterator[str]:
    """An ``http://127.0.0.1:<port>`` URL whose connections are refused for as long as the
    context lasts: the port is bound and never listened on, so nothing else (a developer's
    `realname mock-registry --port 8090`, another test's server) can take it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def run_cli(
    settings: Settings, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REALNAME, *args],
        env=service_env(settings, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )


@contextmanager
def serve(
    settings: Settings, *, log_path: Path, command: str = "serve", **env: str
) -> Iterator[str]:
    """Start `realname serve` (or `mock-registry`) on a free port; yield its base URL; stop it."""
    port = free_port()
    env.setdefault("REALNAME_PUBLIC_URL", f"http://127.0.0.1:{port}")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [REALNAME, command, "--port", str(port)],
            env=service_env(settings, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"realname {command} exited: {log_path.read_text()[-2000:]}")
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("realname serve did not start in 30 s")
                time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def dump_database(runtime: Runtime) -> str:
    """Every row of every table, as text, for scanning."""
    chunks: list[str] = []
    async with runtime.engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            rows = (await conn.execute(table.select())).all()
            chunks.extend(json.dumps([str(v) for v in row], ensure_ascii=False) for row in rows)
            chunks.extend(str(tuple(row)) for row in rows)
    return "\n".join(chunks)


async def raw_database_bytes(runtime: Runtime) -> bytes:
    """For SQLite, the database file and its WAL as bytes (free pages included)."""
    if not runtime.settings.is_sqlite:
        async with runtime.engine.connect() as conn:
            # Everything PostgreSQL would hand to pg_dump, row by row, as JSON text.
            names = [t.name for t in SQLModel.metadata.sorted_tables]
            out: list[str] = []
            for name in names:
                result = await conn.execute(text(f"SELECT row_to_json(t)::text FROM {name} t"))  # noqa: S608
                out.extend(r[0] for r in result)
            return "\n".join(out).encode()
    path = Path(runtime.settings.database_url.removeprefix("sqlite:///"))
    # Read in a child process: closing any descriptor of a SQLite file in *this* process would
    # drop every POSIX lock our open connections hold on it.
    reader = (
        "import sys, pathlib\n"
        "for p in sys.argv[1:]:\n"
        "    f = pathlib.Path(p)\n"
        "    sys.stdout.buffer.write(f.read_bytes() if f.exists() else b'')\n"
    )
    files = [str(path), str(path) + "-wal"]
    done = await anyio.run_process([sys.executable, "-c", reader, *files], check=True)
    return bytes(done.stdout)


def to_fullwidth(value: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)


def canary_forms(real_name: str, id_number: str, phone11: str) -> list[str]:
    """Every spelling in which a leak of the canary identity could show up."""
    return [
        real_name,
        id_number,
        id_number.lower(),
        id_number[:17],
        to_fullwidth(id_number),
        phone11,
        "+86" + phone11,
        "86" + phone11,
        to_fullwidth(phone11),
        f"{phone11[:3]} {phone11[3:7]} {phone11[7:]}",
    ]


# -- fault and scale-out helpers (added for tests/test_faults.py and tests/test_scale_out.py) --


@dataclass
class Service:
    """A `realname` child process: its base URL, its process and its log file."""

    base: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def wait_exit(self, within: float) -> int:
        """The exit code, waiting at most ``within`` seconds for the process to end."""
        try:
            return self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"realname did not exit within {within} s: {self.log()[-2000:]}"
            ) from None

    def wait_ready(self, within: float = 30) -> None:
        """Block until ``/healthz`` answers 200 (or fail, with the log, after ``within`` s)."""
        deadline = time.monotonic() + within
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"realname exited early: {self.log()[-2000:]}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"realname did not start in {within} s: {self.log()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def launch(
    settings: Settings,
    *,
    log_path: Path,
    command: str = "serve",
    args: Sequence[str] = (),
    **env: str,
) -> Service:
    """Start `realname <command> --port <free port> [args]` without waiting for it to be
    ready."""
    port = free_port()
    env.setdefault("REALNAME_PUBLIC_URL", f"http://127.0.0.1:{port}")
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [REALNAME, command, "--port", str(port), *args],
            env=service_env(settings, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    return Service(f"http://127.0.0.1:{port}", proc, log_path)


@contextmanager
def serve_process(
    settings: Settings, *, log_path: Path, command: str = "serve", **env: str
) -> Iterator[Service]:
    """Like :func:`serve`, but yields the :class:`Service` (process included), so a test can
    watch it die (``REALNAME_CRASH_AT``) and read its exit code."""
    service = launch(settings, log_path=log_path, command=command, **env)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


def postgres_server_url() -> str:
    """The PostgreSQL server for tests that always need one (fault and scale-out tests):
    ``REALNAME_TEST_DATABASE_URL`` when it names one, else the local server."""
    url = os.environ.get("REALNAME_TEST_DATABASE_URL", "")
    return url if url.startswith("postgres") else "postgresql://postgres@127.0.0.1:5432/postgres"


async def _postgres_admin(statement: str) -> None:
    import asyncpg

    server = postgres_server_url().replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def scratch_postgres(settings: Settings, prefix: str) -> Iterator[str]:
    """A new PostgreSQL database named ``<prefix>_<hex>``, migrated with `realname migrate`;
    yields its URL and drops it afterwards. Call from synchronous fixtures only."""
    import asyncio
    import uuid

    if not prefix.startswith(("realname_fault", "realname_scale")):
        raise ValueError("scratch databases are named realname_fault_* or realname_scale_*")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    base, _, _ = postgres_server_url().rpartition("/")
    url = f"{base}/{name}"
    asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"'))
    try:
        migrated = run_cli(settings, "migrate", REALNAME_DATABASE_URL=url)
        assert migrated.returncode == 0, migrated.stderr
        yield url
    finally:
        asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


_PEOPLE = itertools.count(secrets.randbelow(10**7))


def resident_id(birth: date, sequence: int, area: str = "110105") -> str:
    """A valid GB 11643 resident ID number (stdnum's check takes the full 18 characters)."""
    from stdnum.cn import ric

    body = f"{area}{birth:%Y%m%d}{sequence % 1000:03d}"
    return body + str(ric.calc_check_digit(body + "0"))


def new_person(**changes: object) -> dict[str, object]:
    """A verification request body for a person nobody used before in this run: a fresh valid
    ID number and a fresh mobile number (the per-phone SMS limit is 1/minute)."""
    n = next(_PEOPLE)
    birth = date(1960, 1, 1) + timedelta(days=n % 15000)
    body: dict[str, object] = {
        "external_user_id": f"user-{n}",
        "real_name": "张三",
        "id_number": resident_id(birth, n // 15000),
        "phone": f"139{n % 10**8:08d}",
        "consent": {"policy_version": "2026-01"},
    }
    body.update(changes)
    return body


def kill_redis_clients(redis_url: str, name: str) -> int:
    """Close, server side, every Redis connection named ``name`` (``CLIENT SETNAME``), as a
    network failure or a Redis restart would; how many there were."""
    client = redis.Redis.from_url(redis_url)
    try:
        ids = [c["id"] for c in client.client_list() if c.get("name") == name]
        for client_id in ids:
            client.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        client.close()


@asynccontextmanager
async def listening(runtime: Runtime, prefix: str) -> AsyncIterator[Invalidations]:
    """A second process's subscription (on a channel of its own test prefix), started."""
    bus = Invalidations(runtime.limits.redis, prefix)
    bus.start()
    try:
        if bus.enabled:
            assert await bus.ready()
        yield bus
    finally:
        await bus.stop()
