"""Over real HTTP against `realname serve` (with its in-process worker): the L2 flow, locks,
limits, races, the standalone mock registry, and two API processes sharing state."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.runtime import Runtime
from tests.support import run_cli, serve
from tests.test_intake import GOOD

FAST = {"REALNAME_CHECK_RETRY_BACKOFF_SECONDS": "0.05", "REALNAME_WORKER_POLL_SECONDS": "0.2"}
REDIS_URL = os.environ.get("REALNAME_TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"


def new_key(runtime: Runtime, mode: str = "test", level: str = "L2") -> str:
    out = run_cli(
        runtime.settings, "clients", "create", "--name", "e2e", "--mode", mode, "--level", level
    )
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["api_key"])


async def wait_status(
    client: httpx.AsyncClient, vid: str, *, leave: str = "pending", within: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        v = (await client.get(f"/v1/verifications/{vid}")).json()
        if v["status"] != leave or time.monotonic() > deadline:
            return dict(v)
        await asyncio.sleep(0.2)  # stay well inside the per-client quota on long waits


async def inbox_code(
    client: httpx.AsyncClient, vid: str, *, skip: int = 0, within: float = 10
) -> str:
    deadline = time.monotonic() + within
    while True:
        data = (await client.get("/v1/sandbox/messages", params={"verification_id": vid})).json()[
            "data"
        ]
        if len(data) > skip:
            body: str = data[0]["body"]
            return next(t for t in body.replace(",", " ").split() if t.isdigit() and len(t) == 6)
        assert time.monotonic() < deadline, "no message reached the sandbox inbox"
        await asyncio.sleep(0.05)


@pytest.fixture
def server(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    with serve(runtime.settings, log_path=tmp_path / "serve.log", **FAST) as base:
        yield base


def api(base: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def test_l2_flow_over_http_reaches_verified(server: str, runtime: Runtime) -> None:
    """POST, wait for the code, read it from the sandbox inbox, submit it: verified."""
    async with api(server, new_key(runtime)) as c:
        vid = (await c.post("/v1/verifications", json=GOOD)).json()["id"]
        v = await wait_status(c, vid)
        assert v["status"] == "awaiting_code"
        r = await c.post(
            f"/v1/verifications/{vid}/sms-code", json={"code": await inbox_code(c, vid)}
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "verified"


async def test_wrong_codes_lock_and_resend_is_limited_over_http(
    server: str, runtime: Runtime
) -> None:
    """Five wrong codes lock the verification; a resend inside 60 s is a 429."""
    async with api(server, new_key(runtime)) as c:
        vid = (await c.post("/v1/verifications", json=GOOD)).json()["id"]
        await wait_status(c, vid)
        code = await inbox_code(c, vid)
        resend = await c.post(f"/v1/verifications/{vid}/sms-code/resend")
        assert resend.status_code == 429
        assert int(resend.headers["Retry-After"]) >= 1
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        answers = [
            (await c.post(f"/v1/verifications/{vid}/sms-code", json={"code": wrong})).json()["code"]
            for _ in range(5)
        ]
        assert answers[-1] == "attempts_exhausted"
        assert (await c.get(f"/v1/verifications/{vid}")).json()["status"] == "locked"


async def test_right_code_raced_twenty_times_over_http(server: str, runtime: Runtime) -> None:
    """The right code sent 20 times at once succeeds exactly once."""
    async with api(server, new_key(runtime)) as c:
        vid = (await c.post("/v1/verifications", json=GOOD)).json()["id"]
        await wait_status(c, vid)
        code = await inbox_code(c, vid)
        answers = await asyncio.gather(
            *(c.post(f"/v1/verifications/{vid}/sms-code", json={"code": code}) for _ in range(20))
        )
        assert sum(r.status_code == 200 for r in answers) == 1
        assert all(r.status_code < 500 for r in answers)


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("不一致", "rejected", "id_mismatch"),
        ("查无此人", "rejected", "id_not_found"),
        ("服务异常", "needs_review", "registry_unavailable"),
        ("超出限额", "needs_review", "registry_quota_exceeded"),
    ],
)
async def test_magic_names_over_http(
    server: str, runtime: Runtime, name: str, status: str, reason: str
) -> None:
    """The API.md magic names give their documented outcome through the running service."""
    async with api(server, new_key(runtime, level="L1")) as c:
        vid = (await c.post("/v1/verifications", json={**GOOD, "real_name": name})).json()["id"]
        v = await wait_status(c, vid)
        assert (v["status"], v["status_reason"]) == (status, reason)


async def test_live_key_against_standalone_mock_registry(runtime: Runtime, tmp_path: Path) -> None:
    """A live key uses the HTTP registry: verified while the mock registry runs, needs_review
    (never verified) once it is stopped."""
    with (
        serve(
            runtime.settings, log_path=tmp_path / "registry.log", command="mock-registry"
        ) as registry,
        serve(
            runtime.settings,
            log_path=tmp_path / "serve.log",
            REALNAME_REGISTRY_URL=registry,
            **FAST,
        ) as base,
    ):
        async with api(base, new_key(runtime, mode="live", level="L1")) as c:
            vid = (await c.post("/v1/verifications", json=GOOD)).json()["id"]
            assert (await wait_status(c, vid))["status"] == "verified"
            mismatch = (
                await c.post(
                    "/v1/verifications",
                    json={
                        **GOOD,
                        "external_user_id": "u2",
                        "id_number": "440305199003071236",
                        "real_name": "不一致",
                    },
                )
            ).json()["id"]
            assert (await wait_status(c, mismatch))["status_reason"] == "id_mismatch"
    with serve(
        runtime.settings, log_path=tmp_path / "serve2.log", REALNAME_REGISTRY_URL=registry, **FAST
    ) as base:
        async with api(base, new_key(runtime, mode="live", level="L1")) as c:
            vid = (
                await c.post(
                    "/v1/verifications",
                    json={**GOOD, "external_user_id": "u3", "id_number": "310104200002290030"},
                )
            ).json()["id"]
            v = await wait_status(c, vid, within=60)
            assert v["status"] == "needs_review"
            assert v["checks"][0]["status"] == "unavailable"


async def test_two_processes_share_limits_codes_and_idempotency(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Two `realname serve` processes on one database and one Redis: the per-phone limit,
    code single use and Idempotency-Key hold across them."""
    # A key prefix of its own: the Redis database may hold other runs' counts.
    env = {**FAST, "REALNAME_REDIS_URL": REDIS_URL, "REALNAME_REDIS_PREFIX": f"t{uuid.uuid4().hex}"}
    key = new_key(runtime)
    with (
        serve(runtime.settings, log_path=tmp_path / "a.log", **env) as a,
        serve(runtime.settings, log_path=tmp_path / "b.log", **env) as b,
    ):
        async with api(a, key) as ca, api(b, key) as cb:
            first = await asyncio.gather(
                ca.post("/v1/verifications", json=GOOD, headers={"Idempotency-Key": "x-proc"}),
                cb.post("/v1/verifications", json=GOOD, headers={"Idempotency-Key": "x-proc"}),
            )
            ids = {r.json()["id"] for r in first if r.status_code == 201}
            assert len(ids) == 1, [r.text for r in first]
            vid = ids.pop()
            await wait_status(ca, vid)
            code = await inbox_code(ca, vid)
            assert (await cb.post(f"/v1/verifications/{vid}/sms-code/resend")).status_code == 429
            answers = await asyncio.gather(
                *(
                    (ca if i % 2 else cb).post(
                        f"/v1/verifications/{vid}/sms-code", json={"code": code}
                    )
                    for i in range(20)
                )
            )
            assert sum(r.status_code == 200 for r in answers) == 1
            assert all(r.status_code < 500 for r in answers)
