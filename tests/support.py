"""Helpers shared by tests: a real `realname serve` process, database dumps, canaries."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
from sqlalchemy import text
from sqlmodel import SQLModel

from app.runtime import Runtime
from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
REALNAME = str(Path(sys.executable).with_name("realname"))


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a child `realname` process sharing the test database and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALNAME_")}
    env.update(
        REALNAME_ENV="dev",
        REALNAME_DATABASE_URL=settings.database_url,
        REALNAME_SECRET_KEY=settings.secret_key.get_secret_value(),
        REALNAME_BLIND_INDEX_KEYS=settings.blind_index_keys.get_secret_value(),
        REALNAME_IDENTITY_HASH_MEMORY_KIB=str(settings.identity_hash_memory_kib),
        REALNAME_IDENTITY_HASH_TIME_COST=str(settings.identity_hash_time_cost),
        REALNAME_DEV_KEYS_FILE=str(settings.dev_keys_file),
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
            out = []
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
    result = await anyio.run_process([sys.executable, "-c", reader, *files], check=True)
    return bytes(result.stdout)


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
