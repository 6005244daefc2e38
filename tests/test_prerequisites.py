"""`make test` checks its prerequisites first: a missing server is named in one line, fast."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.support import REPO_ROOT, free_port


@pytest.mark.parametrize(
    ("variable", "url", "named"),
    [
        ("REALNAME_TEST_REDIS_URL", "redis://127.0.0.1:{port}/0", "Redis"),
        ("REALNAME_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:{port}/x", "PostgreSQL"),
    ],
)
def test_a_missing_server_stops_the_check_with_one_line(
    variable: str, url: str, named: str
) -> None:
    """With nothing listening where the suite expects a server, the check exits 1 within
    seconds, with one line naming the server and how to get it."""
    env = {**os.environ, variable: url.format(port=free_port())}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "tests/prerequisites.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 1
    assert time.monotonic() - started < 10
    assert sum(named in line for line in lines) == 1
    assert all(line.startswith("make test: ") and "install" in line for line in lines)


def test_the_check_passes_where_the_suite_runs() -> None:
    """On a machine with Chromium, PostgreSQL and Redis the check exits 0 silently."""
    done = subprocess.run(
        [sys.executable, "tests/prerequisites.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
