"""The admin web UI's pages in process (no browser): sessions, role rules, forms, erasure."""

from __future__ import annotations

import json
import re
import time

import httpx
from sqlmodel import col, select

from app.admin import auth as admin_auth
from app.db import session_scope
from app.models import AuditEvent
from app.runtime import Runtime
from app.worker import Worker
from tests.test_admin_api import needs_review

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def make_admin(runtime: Runtime, role: str) -> str:
    username = f"{role}-{time.monotonic_ns()}"
    async with session_scope(runtime.sessions) as session:
        await admin_auth.create_admin(
            session, runtime, username=username, password=PASSWORD, role=role
        )
    return username


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form; return the CSRF token of the signed-in session."""
    form = await http.get("/admin/sign-in")
    r = await http.post(
        "/admin/sign-in",
        data={"csrf_token": csrf_of(form), "username": username, "password": password},
    )
    assert (r.status_code, r.headers["location"]) == (303, "/admin/"), r.text
    return csrf_of(await http.get("/admin/"))


async def test_anonymous_page_redirects_to_sign_in(http: httpx.AsyncClient) -> None:
    """Without a session cookie, a page sends the browser to the sign-in form."""
    r = await http.get("/admin/verifications")

    assert (r.status_code, r.headers["location"]) == (303, "/admin/sign-in")


async def test_failed_sign_in_does_not_echo_the_username(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A wrong password gets the form again with a 401 and without the username typed."""
    username = await make_admin(runtime, "reviewer")
    form = await http.get("/admin/sign-in")

    r = await http.post(
        "/admin/sign-in",
        data={"csrf_token": csrf_of(form), "username": username, "password": "wrong password"},
    )

    assert r.status_code == 401
    assert "not correct" in r.text
    assert username not in r.text
    assert "rn_admin_session" not in r.cookies


async def test_sign_out_ends_the_session(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """After signing out, the old session cookie no longer opens any page."""
    token = await sign_in(http, await make_admin(runtime, "auditor"))
    cookie = http.cookies["rn_admin_session"]

    out = await http.post("/admin/sign-out", data={"csrf_token": token})
    replay = await http.get("/admin/", headers={"Cookie": f"rn_admin_session={cookie}"})

    assert out.status_code == 303
    assert (replay.status_code, replay.headers["location"]) == (303, "/admin/sign-in?expired=1")


async def test_reviewer_is_refused_the_owner_forms(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """Creating a client and erasing are for admins: a reviewer gets 403 for both."""
    vid = await needs_review(http, api_key, worker)
    token = await sign_in(http, await make_admin(runtime, "reviewer"))

    create = await http.post(
        "/admin/clients", data={"csrf_token": token, "name": "Shop", "mode": "test"}
    )
    erase = await http.post(
        f"/admin/verifications/{vid}/erase",
        data={"csrf_token": token, "reason_code": "person_request"},
    )

    assert create.status_code == erase.status_code == 403
    assert "Your role may not do this" in create.text


async def test_decision_needs_a_reason(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """Approving with a free-text reason instead of a reason code is refused, changing nothing."""
    vid = await needs_review(http, api_key, worker)
    token = await sign_in(http, await make_admin(runtime, "reviewer"))

    r = await http.post(
        f"/admin/verifications/{vid}/approve", data={"csrf_token": token, "reason": " ok "}
    )

    assert r.status_code == 422
    assert "A reason is required" in r.text
    detail = await http.get(f"/admin/verifications/{vid}")
    assert 'class="badge status-needs_review"' in detail.text


async def test_new_client_key_is_shown_once(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """An admin creating a client sees its API key in that answer and never again."""
    token = await sign_in(http, await make_admin(runtime, "admin"))

    created = await http.post(
        "/admin/clients",
        data={"csrf_token": token, "name": "Mall app", "mode": "test", "default_level": "L1"},
    )
    later = await http.get("/admin/clients")

    assert created.status_code == 201
    key = re.search(r'value="(rn_test_[A-Za-z0-9_-]+)"', created.text)
    assert key, "the new key is on the page"
    assert "Mall app" in later.text
    assert key.group(1) not in later.text


async def test_admin_erase_leaves_a_tombstone(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """An admin's erasure, with a reason, leaves the record erased with no masked values."""
    vid = await needs_review(http, api_key, worker)
    token = await sign_in(http, await make_admin(runtime, "admin"))

    r = await http.post(
        f"/admin/verifications/{vid}/erase",
        data={"csrf_token": token, "reason_code": "person_request"},
    )
    detail = await http.get(f"/admin/verifications/{vid}")

    assert r.status_code == 303
    assert 'class="badge status-erased"' in detail.text
    assert "110105********002X" not in detail.text


async def test_list_pages_are_audited_reads(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """Viewing the queue and the verification list each writes an admin.list_viewed event."""
    await sign_in(http, await make_admin(runtime, "auditor"))

    await http.get("/admin/verifications?status=verified")
    async with session_scope(runtime.sessions) as session:
        query = (
            select(AuditEvent.data)
            .where(AuditEvent.action == "admin.list_viewed")
            .order_by(col(AuditEvent.seq))
        )
        views = [json.loads(d)["view"] for d in (await session.execute(query)).scalars()]

    assert views == ["queue", "verifications"]
