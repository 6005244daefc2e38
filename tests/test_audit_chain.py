"""The audit trail: every state change is a hash-chained, PII-free event; tampering is caught."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.runtime import Runtime
from app.services import audit
from tests.conftest import auth
from tests.support import run_cli
from tests.test_intake import GOOD


async def _events(runtime: Runtime) -> list[Any]:
    async with runtime.engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text("SELECT seq, action, subject_id FROM audit_events ORDER BY seq")
                )
            ).all()
        )


async def test_creation_writes_an_audit_event_in_the_same_transaction(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    """Creating a verification appends verification.created naming it."""
    created = (await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))).json()
    events = [e for e in await _events(runtime) if e.subject_id == created["id"]]
    # The sandbox registry answers in the same transaction: its move follows the creation.
    assert [e.action for e in events] == ["verification.created", "verification.verified"]


async def test_refused_request_writes_nothing(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    """A refused request leaves no verification, identity or audit event behind."""
    before = await _events(runtime)
    await http.post(
        "/v1/verifications",
        json={**GOOD, "consent": {"policy_version": "nope"}},
        headers=auth(api_key),
    )
    assert await _events(runtime) == before
    async with runtime.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM verifications"))).scalar() == 0
        assert (await conn.execute(text("SELECT count(*) FROM identities"))).scalar() == 0


async def test_untouched_chain_verifies(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    """A chain nobody touched verifies end to end."""
    for i in range(3):
        await http.post(
            "/v1/verifications",
            json={
                **GOOD,
                "external_user_id": f"u{i}",
                "id_number": ["11010519491231002X", "440305199003071236", "310104200002290030"][i],
            },
            headers=auth(api_key),
        )
    async with runtime.sessions() as session:
        report = await audit.verify_chain(session)
    assert report.ok
    assert report.checked >= 4


@pytest.mark.parametrize(
    ("tamper", "named_seq"),
    [
        ('UPDATE audit_events SET data = \'{"level":"L3"}\' WHERE seq = 2', 2),
        ("UPDATE audit_events SET action = 'verification.erased' WHERE seq = 2", 2),
        ("DELETE FROM audit_events WHERE seq = 2", 3),
    ],
    ids=["data", "action", "deleted"],
)
async def test_tampering_is_caught_at_the_changed_row(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, tamper: str, named_seq: int
) -> None:
    """`realname audit verify` exits non-zero and names the first broken place: its chain and
    position, and the changed event (or, for a deleted one, the event after the gap)."""
    await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))
    await http.post(
        "/v1/verifications",
        json={**GOOD, "external_user_id": "u2", "id_number": "440305199003071236"},
        headers=auth(api_key),
    )
    ok = run_cli(runtime.settings, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    async with runtime.engine.begin() as conn:
        await conn.execute(text(tamper))
    broken = run_cli(runtime.settings, "audit", "verify")
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert (report["chain"], report["position"]) == (1, 2)
    assert report["first_broken_seq"] == named_seq


async def test_removing_the_newest_events_is_caught(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    """Truncating the tail of the chain is detected through the chain head."""
    await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))
    async with runtime.engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)")
        )
    async with runtime.sessions() as session:
        report = await audit.verify_chain(session)
    assert not report.ok


async def test_audit_data_refuses_personal_fields(runtime: Runtime) -> None:
    """The audit writer refuses data keys that name personal fields."""
    async with runtime.sessions() as session:
        with pytest.raises(ValueError, match="personal"):
            await audit.record(
                session,
                action="x",
                subject_type="x",
                subject_id=None,
                actor_type="system",
                actor_id=None,
                data={"id_number": "…"},
            )
