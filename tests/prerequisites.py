"""Stop `make test` within seconds, with one line per missing piece, when the machine lacks
what the suite needs: Chromium (admin UI and docs browser tests), a PostgreSQL server and a
Redis server (scale-out, fault and two-process tests use them whatever database the rest uses).

Standard library only: it runs before anything else is known to work. Exit status 1 when
something is missing, 0 otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/15"
TIMEOUT = 2.0


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=TIMEOUT
        ):
            return True
    except OSError:
        return False


def missing(environ: dict[str, str]) -> list[str]:
    """One line for each prerequisite that is not there, saying how to get it."""
    problems = []
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        problems.append(
            f"Chromium is missing ({CHROMIUM}), needed by the browser tests: "
            "sudo apt-get install chromium"
        )
    postgres = environ.get("REALNAME_TEST_DATABASE_URL", "")
    postgres = postgres if postgres.startswith("postgres") else POSTGRES
    if not _reachable(postgres, 5432):
        problems.append(
            f"PostgreSQL does not answer at {urlsplit(postgres).netloc.rpartition('@')[2]}: "
            "start a local PostgreSQL (Debian: sudo apt-get install postgresql) "
            "or set REALNAME_TEST_DATABASE_URL"
        )
    redis = environ.get("REALNAME_TEST_REDIS_URL") or REDIS
    if not _reachable(redis, 6379):
        problems.append(
            f"Redis does not answer at {urlsplit(redis).netloc.rpartition('@')[2]}: "
            "start a local Redis (Debian: sudo apt-get install redis-server) "
            "or set REALNAME_TEST_REDIS_URL"
        )
    return problems


def main() -> int:
    problems = missing(dict(os.environ))
    for line in problems:
        print(f"make test: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
