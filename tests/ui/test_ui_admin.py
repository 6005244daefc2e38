"""The admin web UI in a real browser (Debian's headless Chromium driven by Playwright) against a
real `realname serve`: review, roles, CSRF, security headers, masking."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from app.admin import auth as admin_auth
from app.db import session_scope
from app.runtime import Runtime
from app.settings import Settings
from tests.support import canary_forms, run_cli, serve

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"
#: The cheapest argon2 profile for admin passwords, the same in the CLI and the server (tests
#: check behaviour; bench/ measures cost), and quick retries so needs_review comes fast.
FAST = {
    "REALNAME_PASSWORD_HASH_MEMORY_KIB": "8",
    "REALNAME_PASSWORD_HASH_TIME_COST": "1",
    "REALNAME_PASSWORD_HASH_PARALLELISM": "1",
    "REALNAME_CHECK_RETRY_BACKOFF_SECONDS": "0.05",
    "REALNAME_WORKER_POLL_SECONDS": "0.2",
}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'; object-src 'none'"
    ),
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}
CANARY_NAME = "司马金丝雀"
CANARY_PHONE = "13712345678"


def id_number(birth: str, seq: int) -> str:
    """A valid resident ID number (GB 11643 check digit) in Beijing's Xicheng district."""
    body = f"110102{birth}{seq:03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


CANARY_ID = id_number("19880614", 417)


def person(name: str, n: int) -> dict[str, Any]:
    return {
        "external_user_id": f"user-{n}",
        "real_name": name,
        "id_number": id_number("19900101", 100 + n),
        "phone": f"1380013{8000 + n:04d}",
        "consent": {"policy_version": "2026-01"},
        "level": "L1",
    }


# -- arrange helpers ------------------------------------------------------------------------------


def create_admin(settings: Settings, role: str) -> str:
    username = f"{role}-{time.monotonic_ns()}"
    out = run_cli(
        settings,
        "admins",
        "create",
        "--username",
        username,
        "--role",
        role,
        stdin=PASSWORD + "\n",
        **FAST,
    )
    assert out.returncode == 0, out.stderr
    return username


async def make_admin(runtime: Runtime, role: str) -> str:
    """In process, for speed (the acceptance test goes through the CLI)."""
    username = f"{role}-{time.monotonic_ns()}"
    async with session_scope(runtime.sessions) as session:
        await admin_auth.create_admin(
            session, runtime, username=username, password=PASSWORD, role=role
        )
    return username


def create_test_key(settings: Settings) -> str:
    out = run_cli(
        settings, "clients", "create", "--name", "Acme Shop", "--mode", "test", "--level", "L1"
    )
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["api_key"])


async def sandbox_key(make_client: Any) -> str:
    _, key = await make_client("test", level="L1", name="Acme Shop")
    return str(key)


def api(base: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def register(base: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a verification and wait until its checks have settled (it leaves `pending`)."""
    async with api(base, key) as client:
        created = await client.post("/v1/verifications", json=body)
        assert created.status_code == 201, created.text
        vid = created.json()["id"]
        deadline = time.monotonic() + 20
        while True:
            got = (await client.get(f"/v1/verifications/{vid}")).json()
            if got["status"] != "pending" or time.monotonic() > deadline:
                return dict(got)
            await asyncio.sleep(0.05)


async def needs_review(base: str, key: str, n: int = 1) -> str:
    v = await register(base, key, person("服务异常", n))
    assert v["status"] == "needs_review", v
    return str(v["id"])


async def status_of(base: str, key: str, vid: str) -> str:
    async with api(base, key) as client:
        return str((await client.get(f"/v1/verifications/{vid}")).json()["status"])


async def sign_in(page: Page, base: str, username: str) -> None:
    """Sign in with the keyboard: type, then Enter submits."""
    await page.goto(f"{base}/admin/sign-in")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Password").press("Enter")
    await page.wait_for_url(f"{base}/admin/")
    await expect(page.get_by_role("heading", name="Review queue")).to_be_visible()


def csrf_field(page: Page) -> Any:
    return page.locator('input[name="csrf_token"]').first


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `realname serve` for the module; tables are emptied between tests as usual."""
    log = tmp_path_factory.mktemp("ui") / "serve.log"
    with serve(runtime.settings, log_path=log, **FAST) as base:
        yield base


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(10_000)
    yield await context.new_page()
    await context.close()


# -- tests ----------------------------------------------------------------------------------------


async def test_reviewer_approves_a_needs_review_verification_and_tokens_follow(
    server: str, runtime: Runtime, page: Page
) -> None:
    """A reviewer approves a queued needs_review verification; the integrator then gets a token."""
    reviewer = create_admin(runtime.settings, "reviewer")
    key = create_test_key(runtime.settings)
    vid = await needs_review(server, key)
    # Some neighbours, so the queue shows more than one colour.
    await asyncio.gather(
        register(server, key, person("林静", 2)),
        register(server, key, person("不一致", 3)),
        needs_review(server, key, 4),
    )

    await sign_in(page, server, reviewer)
    row = page.locator(f'section[aria-labelledby="waiting-title"] tr[data-verification-id="{vid}"]')
    await expect(row).to_contain_text("registry_unavailable")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "queue.png"), full_page=True)
    await row.get_by_role("link", name="Review").click()
    await page.wait_for_url(f"{server}/admin/verifications/{vid}")
    await page.get_by_label("Reason to approve").select_option("registry_confirmed")
    await page.get_by_label("Note to approve").fill("Registry outage; identity confirmed by call")
    await page.get_by_role("button", name="Approve").click()
    await expect(page.locator(".callout.success")).to_contain_text("Approved")
    await expect(row).to_have_count(0)

    async with api(server, key) as client:
        token = await client.post(f"/v1/verifications/{vid}/tokens")
    assert token.status_code == 201, token.text


async def test_auditor_sees_no_decision_forms(
    server: str, runtime: Runtime, make_client: Any, page: Page
) -> None:
    """An auditor can open a record that needs review but is offered no decision form."""
    auditor = await make_admin(runtime, "auditor")
    vid = await needs_review(server, await sandbox_key(make_client))

    await sign_in(page, server, auditor)
    await page.goto(f"{server}/admin/verifications/{vid}")

    await expect(page.get_by_text("you can read this record, not decide on it")).to_be_visible()
    await expect(page.locator("form.decision")).to_have_count(0)
    await expect(page.get_by_role("button", name="Approve")).to_have_count(0)


async def test_auditor_forged_decision_is_refused(
    server: str, runtime: Runtime, make_client: Any, page: Page
) -> None:
    """An auditor's hand-made approve POST, with a valid CSRF token, is refused with 403."""
    auditor = await make_admin(runtime, "auditor")
    key = await sandbox_key(make_client)
    vid = await needs_review(server, key)
    await sign_in(page, server, auditor)
    token = await csrf_field(page).input_value()

    forged = await page.request.post(
        f"{server}/admin/verifications/{vid}/approve",
        form={"csrf_token": token, "reason_code": "documents_checked"},
    )

    assert forged.status == 403
    assert "Your role may not do this" in await forged.text()
    assert await status_of(server, key, vid) == "needs_review"


async def test_decision_without_csrf_token_is_refused(
    server: str, runtime: Runtime, make_client: Any, page: Page
) -> None:
    """A reviewer's approve POST that lacks the form's CSRF token is refused with 403."""
    reviewer = await make_admin(runtime, "reviewer")
    key = await sandbox_key(make_client)
    vid = await needs_review(server, key)
    await sign_in(page, server, reviewer)

    refused = await page.request.post(
        f"{server}/admin/verifications/{vid}/approve", form={"reason_code": "documents_checked"}
    )

    assert refused.status == 403
    assert "did not come from this site" in await refused.text()
    assert await status_of(server, key, vid) == "needs_review"


async def test_sign_in_without_double_submit_cookie_is_refused(
    server: str, runtime: Runtime
) -> None:
    """A sign-in POST whose token has no matching cookie is refused (login CSRF)."""
    reviewer = await make_admin(runtime, "reviewer")
    async with httpx.AsyncClient(base_url=server) as client:
        form = await client.get("/admin/sign-in")
        token = form.cookies["rn_admin_signin"]
        client.cookies.clear()

        r = await client.post(
            "/admin/sign-in",
            data={"csrf_token": token, "username": reviewer, "password": PASSWORD},
        )

    assert r.status_code == 403
    assert "rn_admin_session" not in r.cookies


async def test_security_headers_on_every_page(
    server: str, runtime: Runtime, make_client: Any, page: Page
) -> None:
    """Every admin page, the stylesheet and the error pages carry the security headers."""
    admin = await make_admin(runtime, "admin")
    vid = await needs_review(server, await sandbox_key(make_client))
    sign_in_page = await page.goto(f"{server}/admin/sign-in")
    assert sign_in_page is not None
    responses = [sign_in_page]
    await sign_in(page, server, admin)

    for path in [
        "/admin/",
        "/admin/verifications?status=needs_review",
        f"/admin/verifications/{vid}",
        "/admin/clients",
        "/admin/audit",
        "/admin/static/admin.css",
        "/admin/no-such-page",
        "/admin/verifications?created_from=not-a-date",
    ]:
        response = await page.goto(server + path)
        assert response is not None
        responses.append(response)

    for response in responses:
        headers = await response.all_headers()
        assert {k: headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, response.url


async def test_pages_keep_their_content_security_policy(
    server: str, runtime: Runtime, make_client: Any, page: Page
) -> None:
    """Browsing the admin pages and submitting their forms raises no CSP violation."""
    admin = await make_admin(runtime, "admin")
    vid = await needs_review(server, await sandbox_key(make_client))
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    await sign_in(page, server, admin)

    for path in ["/admin/", f"/admin/verifications/{vid}", "/admin/clients"]:
        await page.goto(server + path)
    for path in ["/admin/verifications", "/admin/audit"]:
        await page.goto(server + path)
        async with page.expect_navigation():
            await page.get_by_role("button", name="Filter").click()

    assert violations == []


async def test_session_cookie_is_http_only_strict_and_scoped(
    server: str, runtime: Runtime, page: Page
) -> None:
    """The session cookie is HttpOnly, SameSite=Strict, Path=/admin (not Secure over http)."""
    reviewer = await make_admin(runtime, "reviewer")

    await sign_in(page, server, reviewer)

    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["rn_admin_session"]
    assert (session["httpOnly"], session["sameSite"], session["path"]) == (True, "Strict", "/admin")
    assert session["secure"] is False
    assert "rn_admin_signin" not in cookies


async def test_pages_show_no_unmasked_canary_data(
    server: str, runtime: Runtime, make_client: Any, page: Page
) -> None:
    """Queue, list, record, audit log and clients pages hold only masked values of a canary."""
    admin = await make_admin(runtime, "admin")
    key = await sandbox_key(make_client)
    canary = {
        **person(CANARY_NAME, 9),
        "id_number": CANARY_ID,
        "phone": "+86" + CANARY_PHONE,
    }
    created = await register(server, key, canary)
    await sign_in(page, server, admin)

    html = ""
    for path in [
        "/admin/",
        "/admin/verifications",
        f"/admin/verifications/{created['id']}",
        f"/admin/audit?subject_id={created['id']}",
        "/admin/audit",
        "/admin/clients",
    ]:
        await page.goto(server + path)
        html += await page.content()

    assert created["masked"]["id_number"] in html
    assert created["masked"]["phone"] in html
    for form in canary_forms(CANARY_NAME, CANARY_ID, CANARY_PHONE):
        assert form not in html, form


async def test_error_page_does_not_echo_the_input(
    server: str, runtime: Runtime, page: Page
) -> None:
    """A bad filter value gets a friendly 422 page that does not repeat what was sent."""
    reviewer = await make_admin(runtime, "reviewer")
    await sign_in(page, server, reviewer)
    sent = "<b>1988-06-14-" + CANARY_PHONE + "</b>"

    response = await page.goto(f"{server}/admin/verifications?created_from={sent}")

    assert response is not None
    assert response.status == 422
    await expect(page.get_by_role("heading", level=1)).to_have_text("The request is not valid")
    html = await page.content()
    assert CANARY_PHONE not in html
    assert "<b>1988" not in html
