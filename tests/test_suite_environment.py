"""The suite runs against its own settings, whatever the developer's shell and machine hold."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from app.settings import Settings
from tests.support import REPO_ROOT, ambient_settings, service_env

#: What a developer's shell might hold after following the README (or another project's).
STRAY = {
    "REALNAME_ENV": "prod",
    "REALNAME_DATABASE_URL": "sqlite:///nope.db",
    "REALNAME_REDIS_URL": "redis://127.0.0.1:1/0",
    "REALNAME_LIVE_VERIFIERS": "nonsense",
    "REALNAME_LIVE_SENDER": "nonsense",
    "REALNAME_REGISTRY_URL": "http://127.0.0.1:8090",
    "REALNAME_SECRET_KEY": "not-the-suites",
}


def test_the_shell_settings_are_gone_from_the_environment() -> None:
    """No REALNAME_* variable but the suite's own REALNAME_TEST_* knobs is left in os.environ."""
    assert ambient_settings(os.environ) == []


def test_settings_fixture_is_the_suites_own(settings: Settings) -> None:
    """The session settings hold the suite's values and the defaults, nothing from the shell."""
    defaults = Settings(_env_file=None)

    assert settings.env == "test"
    assert settings.database_url != STRAY["REALNAME_DATABASE_URL"]
    assert settings.redis_url == (os.environ.get("REALNAME_TEST_REDIS_URL") or None)
    assert settings.live_verifiers == defaults.live_verifiers
    assert settings.live_sender == defaults.live_sender
    assert settings.secret_key.get_secret_value() != STRAY["REALNAME_SECRET_KEY"]


def test_live_registry_refuses_connections(settings: Settings) -> None:
    """Live clients' HTTP registry is a refused port, never a fixed one another program holds."""
    assert settings.registry_url != STRAY["REALNAME_REGISTRY_URL"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(settings.registry_url + "/healthz", timeout=2)


def test_child_processes_get_only_the_suites_settings(settings: Settings) -> None:
    """A child `realname` gets the suite's REALNAME_* values and none of the shell's."""
    env = service_env(settings)

    assert env["REALNAME_ENV"] == "dev"
    assert env["REALNAME_DATABASE_URL"] == settings.database_url
    assert env["REALNAME_REGISTRY_URL"] == settings.registry_url
    assert not {"REALNAME_LIVE_VERIFIERS", "REALNAME_LIVE_SENDER", "REALNAME_REDIS_URL"} & set(env)


def test_stray_shell_variables_do_not_reach_the_tests() -> None:
    """With stray REALNAME_* variables exported, the checks above still pass in a fresh run."""
    env = {**os.environ, **STRAY}

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_the_shell_settings_are_gone_from_the_environment",
            f"{__file__}::test_settings_fixture_is_the_suites_own",
            f"{__file__}::test_live_registry_refuses_connections",
            f"{__file__}::test_child_processes_get_only_the_suites_settings",
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-3000:]
    assert "4 passed" in done.stdout
