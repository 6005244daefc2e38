"""Operations: metrics without personal data, purge, the admins CLI."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import text, update

from app.models import SmsCode, Verification
from app.models._types import utcnow
from app.runtime import Runtime
from app.worker import Worker
from tests.conftest import auth
from tests.support import run_cli
from tests.test_intake import GOOD
from tests.test_lifecycle import start


async def test_metrics_count_without_personal_data(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """/metrics shows requests by route template, checks and statuses, and no identifying value."""
    v = await start(http, api_key, worker)
    body = (await http.get("/metrics")).text
    assert 'route="/v1/verifications/{verification_id}"' in body
    assert "realname_checks_total" in body
    assert 'realname_verifications{status="verified"}' in body
    for value in (v["id"], GOOD["id_number"], GOOD["phone"], GOOD["real_name"], api_key):
        assert value not in body


async def test_purge_ends_stale_unfinished_verifications(
    http: httpx.AsyncClient, make_client: Any, worker: Worker, runtime: Runtime
) -> None:
    """Unfinished verifications older than the period expire without personal data; audit
    events stay; expired codes go."""
    _, key = await make_client("test", level="L2")
    v = await start(http, key, worker)
    assert v["status"] == "awaiting_code"
    async with runtime.sessions() as session, session.begin():
        await session.execute(update(Verification).values(created_at=utcnow() - timedelta(days=8)))
        await session.execute(update(SmsCode).values(expires_at=utcnow() - timedelta(days=1)))
    async with runtime.engine.connect() as conn:
        events_before = (await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar()
    out = run_cli(runtime.settings, "purge")
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout)
    assert counts["unfinished_expired"] == 1
    async with runtime.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM sms_codes"))).scalar() == 0
    got = (await http.get(f"/v1/verifications/{v['id']}", headers=auth(key))).json()
    assert (got["status"], got["masked"]["phone"]) == ("expired", None)
    async with runtime.engine.connect() as conn:
        events_after = (await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar()
    assert events_after is not None
    assert events_before is not None
    assert events_after > events_before


def test_admins_create_reads_the_password_from_stdin(runtime: Runtime) -> None:
    """`realname admins create` takes the password on stdin and never prints it."""
    out = run_cli(
        runtime.settings,
        "admins",
        "create",
        "--username",
        "ops",
        "--role",
        "auditor",
        stdin="a long enough password\n",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["role"] == "auditor"
    assert "a long enough password" not in out.stdout + out.stderr


def test_admins_create_refuses_a_short_password(runtime: Runtime) -> None:
    """Passwords under 12 characters are refused."""
    out = run_cli(
        runtime.settings,
        "admins",
        "create",
        "--username",
        "ops2",
        "--role",
        "admin",
        stdin="short\n",
    )
    assert out.returncode == 2
