"""Over real HTTP against `realname serve`: create a client, register, read back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.runtime import Runtime
from tests.support import run_cli, serve
from tests.test_intake import GOOD


@pytest.fixture
def server(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    with serve(runtime.settings, log_path=tmp_path / "serve.log") as base:
        yield base


async def test_cli_client_then_register_then_read(server: str, runtime: Runtime) -> None:
    """clients create -> POST /v1/verifications -> GET works over real HTTP."""
    created = run_cli(
        runtime.settings, "clients", "create", "--name", "e2e", "--mode", "test", "--level", "L1"
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["api_key"]
    assert key.startswith("rn_test_")
    assert len(key) >= 8 + 43
    async with httpx.AsyncClient(
        base_url=server, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        r = await client.post("/v1/verifications", json=GOOD)
        assert r.status_code == 201, r.text
        got = await client.get(f"/v1/verifications/{r.json()['id']}")
        assert got.status_code == 200
        assert got.json()["masked"]["id_number"] == "110105********002X"
        assert got.headers["x-request-id"]


async def test_every_bad_input_is_4xx_over_http(server: str, runtime: Runtime) -> None:
    """Bad inputs over real HTTP are 4xx problem+json, never 5xx."""
    key = json.loads(
        run_cli(runtime.settings, "clients", "create", "--name", "e2e", "--mode", "test").stdout
    )["api_key"]
    bad_requests = [
        {"json": {**GOOD, "id_number": "110105194912310021"}},
        {"json": {**GOOD, "phone": "12345678901"}},
        {"json": {**GOOD, "real_name": "a\u202eb"}},
        {"json": {**GOOD, "consent": {"policy_version": "0000"}}},
        {"json": {**GOOD, "extra": 1}},
        {"json": [1, 2, 3]},
        {"json": "string"},
        {"content": b"\xff\xfe", "headers": {"Content-Type": "application/json"}},
        {"content": b"{}", "headers": {"Content-Type": "text/plain"}},
        {"content": b"x" * 100_000, "headers": {"Content-Type": "application/json"}},
    ]
    async with httpx.AsyncClient(
        base_url=server, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        for kwargs in bad_requests:
            r = await client.post("/v1/verifications", **kwargs)  # type: ignore[arg-type]
            assert 400 <= r.status_code < 500, (kwargs, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        assert (await client.get("/v1/verifications/ver_missing")).status_code == 404
        assert (await client.delete("/v1/nothing-here")).status_code in {404, 405}


def test_migrate_command_is_idempotent(runtime: Runtime) -> None:
    """`realname migrate` on an up-to-date database succeeds and changes nothing."""
    result = run_cli(runtime.settings, "migrate")
    assert result.returncode == 0, result.stderr
