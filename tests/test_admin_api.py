"""The admin API: sign-in, sessions, roles, review decisions, search, bulk-access guard."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from app.admin import auth as admin_auth
from app.admin.auth import totp_ok
from app.main import create_app
from app.models import AdminSession
from app.models._types import utcnow
from app.runtime import Runtime
from app.worker import Worker
from tests.conftest import auth
from tests.test_intake import GOOD
from tests.test_lifecycle import start

PASSWORD = "correct horse battery staple"


async def make_admin(
    runtime: Runtime, role: str, username: str | None = None, *, totp: bool = False
) -> tuple[str, bytes | None]:
    from app.db import session_scope

    name = username or f"{role}-1"
    async with session_scope(runtime.sessions) as session:
        _, secret = await admin_auth.create_admin(
            session, runtime, username=name, password=PASSWORD, role=role, with_totp=totp
        )
    return name, secret


async def sign_in(
    http: httpx.AsyncClient, username: str, password: str = PASSWORD, **extra: Any
) -> httpx.Response:
    return await http.post(
        "/v1/admin/sessions", json={"username": username, "password": password, **extra}
    )


async def admin_token(http: httpx.AsyncClient, runtime: Runtime, role: str) -> str:
    name, _ = await make_admin(runtime, role)
    r = await sign_in(http, name)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def needs_review(http: httpx.AsyncClient, key: str, worker: Worker, **changes: Any) -> str:
    v = await start(http, key, worker, real_name="服务异常", **changes)
    assert v["status"] == "needs_review"
    return str(v["id"])


def admin_routes(runtime: Runtime) -> list[tuple[str, str]]:
    """Every admin (method, path) the app serves, from its OpenAPI schema."""
    schema = create_app(runtime=runtime).openapi()
    out = []
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/admin") or path == "/v1/admin/sessions":
            continue
        concrete = path.replace("{verification_id}", "ver_x").replace("{action}", "approve")
        out += [(method.upper(), concrete) for method in operations]
    return out


async def test_every_admin_route_refuses_anonymous_and_integrator_keys(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str
) -> None:
    """Each admin route (enumerated from the app) gives 401 without credentials and 403 for an
    integrator key."""
    routes = admin_routes(runtime)
    assert len(routes) >= 10
    for method, path in routes:
        anonymous = await http.request(method, path, json={"reason": "test", "id_number": "x"})
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        integrator = await http.request(
            method, path, headers=auth(api_key), json={"reason": "test", "id_number": "x"}
        )
        assert integrator.status_code == 403, (method, path, integrator.text)


async def test_sign_in_and_out(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """A signed-in admin can call the API; after sign-out the token is dead."""
    token = await admin_token(http, runtime, "reviewer")
    assert (await http.get("/v1/admin/stats", headers=bearer(token))).status_code == 200
    assert (
        await http.delete("/v1/admin/sessions/current", headers=bearer(token))
    ).status_code == 204
    r = await http.get("/v1/admin/stats", headers=bearer(token))
    assert (r.status_code, r.json()["code"]) == (401, "session_expired")


async def test_wrong_password_and_unknown_user_answer_alike(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A wrong password and an unknown username get the same answer."""
    name, _ = await make_admin(runtime, "reviewer")
    wrong = await sign_in(http, name, "wrong password!!")
    unknown = await sign_in(http, "nobody-here", "wrong password!!")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_throttling_cannot_lock_out_the_victim(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Failed guesses from one address are throttled there, while the real admin signs in from
    another address."""
    name, _ = await make_admin(runtime, "reviewer")
    codes = [(await sign_in(http, name, "guess-guess-guess")).status_code for _ in range(6)]
    assert codes[:5] == [401] * 5
    assert codes[5] == 429
    app = create_app(runtime=runtime)
    elsewhere = httpx.ASGITransport(app=app, client=("10.9.8.7", 1234))
    async with httpx.AsyncClient(transport=elsewhere, base_url="http://testserver") as other:
        assert (await sign_in(other, name)).status_code == 201


async def test_idle_and_absolute_timeouts_end_sessions(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A session unused past the idle timeout, or past its absolute end, no longer works."""
    token = await admin_token(http, runtime, "auditor")
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            update(AdminSession).values(last_seen_at=utcnow() - timedelta(minutes=31))
        )
    assert (await http.get("/v1/admin/stats", headers=bearer(token))).status_code == 401
    token2 = (await sign_in(http, "auditor-1")).json()["token"]
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            update(AdminSession).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert (await http.get("/v1/admin/stats", headers=bearer(token2))).status_code == 401


async def test_totp_is_required_when_enrolled(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """With TOTP enrolled, sign-in needs the current code."""
    from app.admin.auth import totp_for

    name, secret = await make_admin(runtime, "admin", totp=True)
    assert secret is not None
    assert (await sign_in(http, name)).status_code == 401
    import time

    code = totp_for(secret).generate(int(time.time())).decode()
    assert (await sign_in(http, name, totp=code)).status_code == 201


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_totp_matches_rfc_6238_vectors(at: int, expected: str) -> None:
    """The TOTP implementation reproduces RFC 6238 Appendix B (SHA-1, 8 digits)."""
    from cryptography.hazmat.primitives.hashes import SHA1
    from cryptography.hazmat.primitives.twofactor.totp import TOTP

    totp = TOTP(b"12345678901234567890", 8, SHA1(), 30, enforce_key_length=False)  # noqa: S303
    assert totp.generate(at).decode() == expected


def test_totp_check_allows_one_step_of_drift_only() -> None:
    """A code from the previous step passes; one from two steps back does not."""
    from app.admin.auth import totp_for

    secret = b"12345678901234567890"
    now = 1_700_000_000
    previous = totp_for(secret).generate(now - 30).decode()
    stale = totp_for(secret).generate(now - 90).decode()
    assert totp_ok(secret, previous, now)
    assert not totp_ok(secret, stale, now)
    assert not totp_ok(secret, "１２３４５６", now)


async def test_password_hash_is_upgraded_on_sign_in(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """When the password profile changes, the next sign-in rehashes the password."""
    from app.crypto import Argon2Pool, Argon2Profile

    name, _ = await make_admin(runtime, "auditor")
    async with runtime.engine.connect() as conn:
        before = (await conn.execute(text("SELECT password_hash FROM admins"))).scalar()
    original = runtime.password_hasher
    cheaper = Argon2Pool(Argon2Profile(memory_kib=16, time_cost=2, parallelism=1), 2)
    runtime.password_hasher = cheaper
    try:
        assert (await sign_in(http, name)).status_code == 201
    finally:
        runtime.password_hasher = original
        cheaper.close()
    async with runtime.engine.connect() as conn:
        after = (await conn.execute(text("SELECT password_hash FROM admins"))).scalar()
    assert before != after
    assert "m=16,t=2" in str(after)


async def test_reviewer_approves_and_the_integrator_gets_a_token(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Approving a needs_review verification makes it verified; the integrator then gets a token."""
    vid = await needs_review(http, api_key, worker)
    token = await admin_token(http, runtime, "reviewer")
    queue = (
        await http.get(
            "/v1/admin/verifications", params={"status": "needs_review"}, headers=bearer(token)
        )
    ).json()
    assert [v["id"] for v in queue["data"]] == [vid]
    r = await http.post(
        f"/v1/admin/verifications/{vid}/approve",
        json={"reason_code": "documents_checked"},
        headers=bearer(token),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "verified"
    assert (
        await http.post(f"/v1/verifications/{vid}/tokens", headers=auth(api_key))
    ).status_code == 201


async def test_decisions_need_a_reason(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """An empty or blank reason is refused."""
    vid = await needs_review(http, api_key, worker)
    token = await admin_token(http, runtime, "reviewer")
    r = await http.post(
        f"/v1/admin/verifications/{vid}/approve", json={"reason": "   "}, headers=bearer(token)
    )
    assert (r.status_code, r.json()["code"]) == (422, "reason_required")


async def test_auditor_cannot_decide(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Auditors read but cannot approve (403 insufficient_role)."""
    vid = await needs_review(http, api_key, worker)
    token = await admin_token(http, runtime, "auditor")
    r = await http.post(
        f"/v1/admin/verifications/{vid}/approve",
        json={"reason_code": "documents_checked"},
        headers=bearer(token),
    )
    assert (r.status_code, r.json()["code"]) == (403, "insufficient_role")
    assert (
        await http.get(f"/v1/admin/verifications/{vid}", headers=bearer(token))
    ).status_code == 200


async def test_only_admins_manage_clients(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """Creating a client needs the admin role; the key is shown once."""
    reviewer = await admin_token(http, runtime, "reviewer")
    body = {"name": "Shop", "mode": "test"}
    assert (
        await http.post("/v1/admin/clients", json=body, headers=bearer(reviewer))
    ).status_code == 403
    name, _ = await make_admin(runtime, "admin", "boss")
    boss = (await sign_in(http, name)).json()["token"]
    r = await http.post("/v1/admin/clients", json=body, headers=bearer(boss))
    assert r.status_code == 201
    assert r.json()["api_key"].startswith("rn_test_")
    listed = (await http.get("/v1/admin/clients", headers=bearer(boss))).json()
    assert "api_key" not in listed[0]


async def test_wrong_transition_is_409(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Approving a verification that is not awaiting review is invalid_transition."""
    v = await start(http, api_key, worker)
    token = await admin_token(http, runtime, "reviewer")
    r = await http.post(
        f"/v1/admin/verifications/{v['id']}/approve",
        json={"reason_code": "documents_checked"},
        headers=bearer(token),
    )
    assert (r.status_code, r.json()["code"]) == (409, "invalid_transition")


async def test_revoke_kills_tokens(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """An admin revoking a verified verification makes its tokens inactive at once."""
    v = await start(http, api_key, worker)
    tok = (await http.post(f"/v1/verifications/{v['id']}/tokens", headers=auth(api_key))).json()[
        "access_token"
    ]
    token = await admin_token(http, runtime, "reviewer")
    await http.post(
        f"/v1/admin/verifications/{v['id']}/revoke",
        json={"reason_code": "suspected_fraud"},
        headers=bearer(token),
    )
    intro = (
        await http.post("/v1/tokens/introspect", json={"token": tok}, headers=auth(api_key))
    ).json()
    assert intro == {"active": False}


async def test_search_by_id_number_is_audited_and_needs_a_reason(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Search finds the person through the blind index, needs a reason, and is audited without
    the number."""
    v = await start(http, api_key, worker)
    token = await admin_token(http, runtime, "reviewer")
    no_reason = await http.post(
        "/v1/admin/verifications/search",
        json={"id_number": GOOD["id_number"], "reason_code": None},
        headers=bearer(token),
    )
    assert no_reason.status_code == 422
    r = await http.post(
        "/v1/admin/verifications/search",
        json={"id_number": "11010519491231002x", "reason_code": "legal_order"},
        headers=bearer(token),
    )
    assert [x["id"] for x in r.json()] == [v["id"]]
    async with runtime.engine.connect() as conn:
        data = (
            await conn.execute(
                text("SELECT data FROM audit_events WHERE action = 'admin.searched_id_number'")
            )
        ).scalar()
    assert json.loads(str(data))["reason_code"] == "legal_order"
    assert GOOD["id_number"] not in str(data)


async def test_detail_read_is_audited_and_masked(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Opening a record shows masked values and a timeline, and writes admin.record_viewed."""
    v = await start(http, api_key, worker)
    token = await admin_token(http, runtime, "auditor")
    r = await http.get(f"/v1/admin/verifications/{v['id']}", headers=bearer(token))
    body = r.json()
    assert body["masked"]["id_number"] == "110105********002X"
    assert GOOD["id_number"] not in r.text
    assert GOOD["phone"] not in r.text
    assert any(e["action"] == "verification.created" for e in body["timeline"])
    async with runtime.engine.connect() as conn:
        n = (
            await conn.execute(
                text("SELECT count(*) FROM audit_events WHERE action = 'admin.record_viewed'")
            )
        ).scalar()
    assert n == 1


async def test_list_paginates_with_a_cursor(
    http: httpx.AsyncClient, make_client: Any, runtime: Runtime
) -> None:
    """Pages follow the cursor without repeats or gaps, newest first."""
    _, key = await make_client("test", level="L1")
    ids = ["11010519491231002X", "440305199003071236", "310104200002290030"]
    for i, number in enumerate(ids):
        await http.post(
            "/v1/verifications",
            json={**GOOD, "external_user_id": f"u{i}", "id_number": number},
            headers=auth(key),
        )
    token = await admin_token(http, runtime, "auditor")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (
            await http.get("/v1/admin/verifications", params=params, headers=bearer(token))
        ).json()
        seen += [v["id"] for v in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 3


async def test_admin_erase_needs_admin_role_and_reason(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Reviewers cannot erase; admins can, with a reason."""
    v = await start(http, api_key, worker)
    reviewer = await admin_token(http, runtime, "reviewer")
    assert (
        await http.post(
            f"/v1/admin/verifications/{v['id']}/erase",
            json={"reason_code": "person_request"},
            headers=bearer(reviewer),
        )
    ).status_code == 403
    name, _ = await make_admin(runtime, "admin", "boss")
    boss = (await sign_in(http, name)).json()["token"]
    r = await http.post(
        f"/v1/admin/verifications/{v['id']}/erase",
        json={"reason_code": "person_request"},
        headers=bearer(boss),
    )
    assert (r.status_code, r.json()["status"]) == (200, "erased")


def test_short_audit_retention_is_refused() -> None:
    """A retention below 180 days (Art. 21) is refused by the settings."""
    from pydantic import ValidationError

    from app.settings import Settings

    with pytest.raises(ValidationError):
        Settings(audit_retention_days=90, _env_file=None)


async def test_approving_an_l2_case_still_asks_for_the_code(
    http: httpx.AsyncClient, make_client: Any, worker: Worker, runtime: Runtime
) -> None:
    """Approval settles the registry check but not phone possession: an L2 case resumes at
    awaiting_code, and only the code makes it verified."""
    from tests.test_lifecycle import inbox_code, submit

    _, key = await make_client("test", level="L2")
    vid = await needs_review(http, key, worker)
    token = await admin_token(http, runtime, "reviewer")
    r = await http.post(
        f"/v1/admin/verifications/{vid}/approve",
        json={"reason_code": "registry_confirmed"},
        headers=bearer(token),
    )
    assert r.json()["status"] == "awaiting_code"
    assert (
        await http.post(f"/v1/verifications/{vid}/tokens", headers=auth(key))
    ).status_code == 409
    await worker.run_until_idle()
    done = await submit(http, key, vid, await inbox_code(http, key, vid))
    assert done.json()["status"] == "verified"
    assert {c["type"]: c["reason"] for c in done.json()["checks"]} == {
        "id_registry": "manual_review",
        "sms_otp": None,
    }


@pytest.mark.parametrize(
    "params",
    [
        {"created_from": "2026-01-01T00:00:00"},
        {"created_from": "0001-01-01T00:00:00+01:00"},
        {"created_to": "9999-12-31T23:59:59-14:00"},
        {"cursor": "bm90IGEgY3Vyc29y"},
    ],
)
async def test_odd_list_filters_are_4xx_or_handled(
    http: httpx.AsyncClient, runtime: Runtime, params: dict[str, str]
) -> None:
    """Dates without a zone, dates that overflow UTC and bad cursors never give a 500."""
    token = await admin_token(http, runtime, "auditor")
    r = await http.get("/v1/admin/verifications", params=params, headers=bearer(token))
    assert r.status_code < 500, r.text


async def test_huge_audit_cursor_is_refused(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """An out-of-range before_seq is a 422, not an overflow."""
    token = await admin_token(http, runtime, "auditor")
    r = await http.get(
        "/v1/admin/audit-events", params={"before_seq": str(10**30)}, headers=bearer(token)
    )
    assert r.status_code == 422


async def test_reasons_may_not_carry_identifying_numbers(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """A reason with a phone-like run of digits is refused: reasons stay in the audit chain."""
    vid = await needs_review(http, api_key, worker)
    token = await admin_token(http, runtime, "reviewer")
    r = await http.post(
        f"/v1/admin/verifications/{vid}/reject",
        json={"reason": "citizen 138 0013 8000 called"},
        headers=bearer(token),
    )
    assert (r.status_code, r.json()["code"]) == (422, "reason_required")
    assert "138" not in r.text
