"""The things a bench run starts and must stop: a scratch PostgreSQL database, ``realname`` CLI
calls, and server processes (``realname serve --workers N``, the trivial app on uvicorn)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from app.crypto import Argon2Profile

REPO_ROOT = Path(__file__).resolve().parent.parent
REALNAME = str(Path(sys.executable).with_name("realname"))
DATABASE_PREFIX = "realname_bench_"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(server_url: str, name: str) -> str:
    """``server_url`` (any database on the server) pointed at database ``name``."""
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


@dataclass
class ScratchDatabase:
    """A fresh ``realname_bench_*`` database, dropped (with its connections) on :meth:`drop`."""

    server_url: str
    name: str = field(default_factory=lambda: DATABASE_PREFIX + secrets.token_hex(6))

    @property
    def url(self) -> str:
        return with_database(self.server_url, self.name)

    async def _admin(self, statement: str) -> None:
        conn = await asyncpg.connect(self.server_url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    async def create(self) -> None:
        assert self.name.startswith(DATABASE_PREFIX)
        assert self.name.isidentifier()
        await self._admin(f'CREATE DATABASE "{self.name}"')

    async def drop(self) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def create_kv_table(url: str, rows: int, heads: int = 8) -> None:
    """``bench_kv(id, value)`` with ``rows`` rows, for the trivial app's primary-key SELECT; and
    for its token-issue-shaped transaction, ``heads`` chain heads, a grant table and a log
    (indexed as ``service_tokens`` and ``audit_events`` are)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute("CREATE TABLE bench_kv (id integer PRIMARY KEY, value text NOT NULL)")
        await conn.executemany(
            "INSERT INTO bench_kv (id, value) VALUES ($1, $2)",
            [(i, f"value-{i}") for i in range(rows)],
        )
        await conn.execute(
            "CREATE TABLE bench_head (id integer PRIMARY KEY, seq bigint NOT NULL,"
            " hash text NOT NULL);"
            "CREATE TABLE bench_grant (jti text PRIMARY KEY, kv integer NOT NULL,"
            " issued_at timestamptz NOT NULL);"
            "CREATE INDEX ON bench_grant (kv); CREATE INDEX ON bench_grant (issued_at);"
            "CREATE TABLE bench_log (seq bigserial PRIMARY KEY, head integer NOT NULL,"
            " head_seq bigint NOT NULL, hash text NOT NULL, prev_hash text NOT NULL,"
            " kv integer NOT NULL, data text NOT NULL, at timestamptz NOT NULL);"
            "CREATE UNIQUE INDEX ON bench_log (head, head_seq); CREATE INDEX ON bench_log (kv);"
        )
        await conn.executemany(
            "INSERT INTO bench_head (id, seq, hash) VALUES ($1, 0, $2)",
            [(i, "0" * 64) for i in range(1, heads + 1)],
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def _key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def service_env(
    database_url: str,
    redis_url: str | None,
    profile: Argon2Profile,
    keys_dir: Path,
    **extra: str,
) -> dict[str, str]:
    """Environment of the ``realname`` processes: this run's database, fresh keys, the argon2
    profile under test, and limits raised so that the bench measures work, not refusals."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALNAME_")}
    env.update(
        REALNAME_ENV="dev",
        REALNAME_DATABASE_URL=database_url,
        REALNAME_SECRET_KEY=_key(),
        REALNAME_BLIND_INDEX_KEYS="1:" + _key(),
        REALNAME_DEV_KEYS_FILE=str(keys_dir / "dev-keys.json"),
        REALNAME_IDENTITY_HASH_MEMORY_KIB=str(profile.memory_kib),
        REALNAME_IDENTITY_HASH_TIME_COST=str(profile.time_cost),
        REALNAME_IDENTITY_HASH_PARALLELISM=str(profile.parallelism),
        # One bench client sends thousands of requests a minute; each person gets one SMS.
        REALNAME_CLIENT_REQUESTS_PER_MINUTE="100000000",
        REALNAME_SMS_PHONE_LIMITS="1000/minute",
    )
    if redis_url:
        env["REALNAME_REDIS_URL"] = redis_url
    env.update(extra)
    return env


async def run_cli(env: dict[str, str], *args: str, within: float = 120) -> str:
    """Run ``realname ARGS``; return its stdout; raise with its stderr on failure."""
    proc = await asyncio.create_subprocess_exec(
        REALNAME,
        *args,
        env=env,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"realname {' '.join(args)} took over {within} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"realname {' '.join(args)} failed: {err.decode()[-2000:]}")
    return out.decode()


async def create_client(env: dict[str, str], name: str, level: str) -> str:
    """A test-mode client at ``level``; returns its API key."""
    out = await run_cli(
        env, "clients", "create", "--name", name, "--mode", "test", "--level", level
    )
    return str(json.loads(out.strip().splitlines()[-1])["api_key"])


class ServerProcess:
    """A server we started, in its own process group, stopped by its pid alone."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def start(self, port: int, workers: int, within: float = 90) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        await self._wait_ready(port, workers, within)

    async def _wait_ready(self, port: int, workers: int, within: float) -> None:
        """Until /healthz answers and every worker process is up (then a short settle)."""
        from bench.cpu import _process_table

        assert self.proc is not None
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.get(f"http://127.0.0.1:{port}/healthz")
                    children = [p for p, (pp, _, _) in _process_table().items() if pp == self.pid]
                    if answer.status_code == 200 and (workers <= 1 or len(children) >= workers):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready in {within} s:\n{self.log_tail()}")
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)

    def check_alive(self, during: str) -> None:
        """Raise if the server has exited (it must outlive every scenario)."""
        if self.proc is not None and self.proc.returncode is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.proc.returncode} during {during}"
            )

    async def stop(self, within: float = 20) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), within)
        except TimeoutError:
            # Our own process group (start_new_session), by its id: the supervisor and workers.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def realname_server(
    env: dict[str, str], port: int, workers: int, log_path: Path, role: str = "all"
) -> ServerProcess:
    argv = [REALNAME, "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers), "--role", role]
    name = "realname serve" if role == "all" else f"realname serve --role {role}"
    return ServerProcess(name, argv, env, log_path)


def trivial_server(database_url: str, port: int, workers: int, log_path: Path) -> ServerProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALNAME_")}
    env["BENCH_TRIVIAL_DATABASE_URL"] = database_url
    argv = [sys.executable, "-m", "uvicorn", "bench.trivial:create_app", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    argv += ["--no-access-log", "--log-level", "warning"]
    return ServerProcess("trivial app", argv, env, log_path)
