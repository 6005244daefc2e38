"""The README's walkthrough, ``examples/quickstart.sh``, runs green against `realname serve`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.runtime import Runtime
from tests.support import REALNAME, REPO_ROOT, serve, service_env

pytestmark = pytest.mark.e2e

FAST = {"REALNAME_CHECK_RETRY_BACKOFF_SECONDS": "0.05", "REALNAME_WORKER_POLL_SECONDS": "0.2"}


@pytest.fixture
def service(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    with serve(runtime.settings, log_path=tmp_path / "serve.log", **FAST) as base:
        yield base


def test_quickstart_script_verifies_issues_introspects_and_revokes(
    service: str, runtime: Runtime
) -> None:
    """The script creates a client, verifies by SMS code, and introspects and revokes a token in
    form encoding; it exits 0."""
    env = service_env(runtime.settings, REALNAME_URL=service, REALNAME=REALNAME)
    done = subprocess.run(
        ["sh", "examples/quickstart.sh"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "introspected and revoked" in done.stdout
    assert '{"active":false}' in done.stderr
