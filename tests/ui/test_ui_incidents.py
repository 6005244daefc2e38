"""Admin UI pages for incidents and the person's rights: confirm step, banner, printable export."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from app.runtime import Runtime
from app.worker import Worker
from tests.test_tokens import verified
from tests.ui.test_ui_pages import make_admin, sign_in


async def _measures(runtime: Runtime) -> int:
    async with runtime.engine.connect() as conn:
        return int(
            (await conn.execute(text("SELECT count(*) FROM emergency_measures"))).scalar_one()
        )


async def test_emergency_action_needs_a_confirm_step(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The first post only shows what will happen; the confirmed one acts."""
    token = await sign_in(http, await make_admin(runtime, "admin"))
    form = {"csrf_token": token, "action": "suspend-issuance", "reason_code": "drill"}
    first = await http.post("/admin/emergency", data=form)
    assert first.status_code == 200
    assert "Confirm: Suspend issuance" in first.text
    assert await _measures(runtime) == 0
    done = await http.post("/admin/emergency", data={**form, "confirm": "yes"})
    assert done.status_code == 303
    assert await _measures(runtime) == 1


async def test_banner_shows_on_every_page_while_in_force(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """While issuance is suspended, every admin page carries the banner; resumed, none does."""
    token = await sign_in(http, await make_admin(runtime, "admin"))
    base = {"csrf_token": token, "reason_code": "drill", "confirm": "yes"}
    await http.post("/admin/emergency", data={**base, "action": "suspend-issuance"})
    for path in ("/admin/", "/admin/verifications", "/admin/clients", "/admin/audit"):
        assert "Issuance suspended for every client" in (await http.get(path)).text, path
    await http.post(
        "/admin/emergency",
        data={**base, "action": "resume-issuance", "reason_code": "incident_resolved"},
    )
    assert "Emergency measures in force" not in (await http.get("/admin/")).text


async def test_reviewer_cannot_take_emergency_actions(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A reviewer gets 403 and nothing changes."""
    token = await sign_in(http, await make_admin(runtime, "reviewer"))
    r = await http.post(
        "/admin/emergency",
        data={
            "csrf_token": token,
            "action": "revoke-tokens",
            "reason_code": "drill",
            "confirm": "yes",
        },
    )
    assert r.status_code == 403
    assert await _measures(runtime) == 0


async def test_printable_export_page_shows_the_users_data(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """The export page lists the verification with its masked values and is audited."""
    v = await verified(http, api_key, worker)
    await sign_in(http, await make_admin(runtime, "auditor"))
    page = await http.get(f"/admin/verifications/{v['id']}/export")
    assert page.status_code == 200
    assert v["masked"]["id_number"] in page.text
    assert f'Verification <span class="mono">{v["id"]}</span>' in page.text
    async with runtime.engine.connect() as conn:
        exported = (
            await conn.execute(
                text("SELECT count(*) FROM audit_events WHERE action = 'verification.exported'")
            )
        ).scalar()
    assert exported == 1
