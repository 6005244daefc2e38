"""Art. 25 emergency actions: suspend issuance, revoke every token, quarantine a provider."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.faults import EXIT_CODE
from app.runtime import Runtime
from app.services import audit
from app.worker import Worker
from realname_sdk import InvalidToken, TokenVerifier
from tests.conftest import auth
from tests.support import run_cli, serve
from tests.test_admin_api import admin_token, bearer
from tests.test_intake import GOOD
from tests.test_lifecycle import start
from tests.test_tokens import introspect, token_for, verified

OTHER_ID = "440305199003071236"


async def act(http: httpx.AsyncClient, token: str, action: str, **body: Any) -> httpx.Response:
    return await http.post(f"/v1/admin/emergency/{action}", json=body, headers=bearer(token))


async def count(runtime: Runtime, sql: str) -> int:
    async with runtime.engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


def test_documented_reason_codes_are_the_schemas() -> None:
    """The API schema's reason codes are the service's documented list."""
    from typing import get_args

    from app.schemas.emergency import ReasonCode
    from app.services.emergency import REASON_CODES

    assert list(get_args(ReasonCode)) == list(REASON_CODES)


async def test_suspension_refuses_registration_and_tokens_but_not_introspection(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """While suspended, registration and token issue answer 503 issuance_suspended with
    Retry-After; reads and introspection go on."""
    v = await verified(http, api_key, worker)
    token = await token_for(http, api_key, v["id"])
    admin = await admin_token(http, runtime, "admin")
    r = await act(http, admin, "suspend-issuance", reason_code="security_incident")
    assert r.status_code == 200, r.text
    refused = await http.post(
        "/v1/verifications",
        json={**GOOD, "external_user_id": "u2", "id_number": OTHER_ID},
        headers=auth(api_key),
    )
    assert refused.status_code == 503
    assert refused.json()["code"] == "issuance_suspended"
    assert int(refused.headers["Retry-After"]) > 0
    issued = await http.post(f"/v1/verifications/{v['id']}/tokens", headers=auth(api_key))
    assert issued.json()["code"] == "issuance_suspended"
    assert (await introspect(http, api_key, token))["active"] is True
    assert (await http.get(f"/v1/verifications/{v['id']}", headers=auth(api_key))).is_success


async def test_suspension_still_replays_an_earlier_answer(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str
) -> None:
    """A retried registration with its Idempotency-Key gets its stored answer, not 503."""
    headers = auth(api_key, **{"Idempotency-Key": "signup-1"})
    first = await http.post("/v1/verifications", json=GOOD, headers=headers)
    admin = await admin_token(http, runtime, "admin")
    await act(http, admin, "suspend-issuance", reason_code="drill")
    again = await http.post("/v1/verifications", json=GOOD, headers=headers)
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]


async def test_quarantined_sender_is_not_called(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any, worker: Worker
) -> None:
    """With the sandbox sender quarantined, no message is delivered; the send is held."""
    _, key = await make_client("test", level="L2")
    admin = await admin_token(http, runtime, "admin")
    r = await act(
        http, admin, "quarantine-provider", reason_code="provider_compromised", provider="sandbox"
    )
    assert r.status_code == 200, r.text
    v = await start(http, key, worker)
    assert v["status"] == "awaiting_code"
    inbox = await http.get(
        "/v1/sandbox/messages", params={"verification_id": v["id"]}, headers=auth(key)
    )
    assert inbox.json()["data"] == []
    async with runtime.engine.connect() as conn:
        held = (
            await conn.execute(
                text(
                    "SELECT last_error FROM outbox_jobs WHERE kind = 'send_sms' AND done_at IS NULL"
                )
            )
        ).scalar_one()
    assert held == "sender_quarantined"


async def test_resume_ends_the_suspension(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str
) -> None:
    """After resume-issuance, registration is accepted again."""
    admin = await admin_token(http, runtime, "admin")
    await act(http, admin, "suspend-issuance", reason_code="drill")
    r = await act(http, admin, "resume-issuance", reason_code="incident_resolved")
    assert r.status_code == 200, r.text
    created = await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))
    assert created.status_code == 201


async def test_suspending_twice_changes_nothing(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """A second suspension of the same scope is idempotent: same measure, no new audit event."""
    admin = await admin_token(http, runtime, "admin")
    first = (await act(http, admin, "suspend-issuance", reason_code="drill")).json()
    events = await count(runtime, "SELECT count(*) FROM audit_events")
    second = (await act(http, admin, "suspend-issuance", reason_code="drill")).json()
    assert (first["changed"], second["changed"]) == (True, False)
    assert second["measure"]["id"] == first["measure"]["id"]
    assert await count(runtime, "SELECT count(*) FROM audit_events") == events


async def test_resuming_what_is_not_suspended_says_so(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """resume-issuance without a suspension answers 409 not_suspended."""
    admin = await admin_token(http, runtime, "admin")
    r = await act(http, admin, "resume-issuance", reason_code="incident_resolved")
    assert (r.status_code, r.json()["code"]) == (409, "not_suspended")


async def test_suspension_for_one_client_leaves_the_others(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any
) -> None:
    """A suspension naming a client refuses that client only."""
    cid, key = await make_client("test", level="L1")
    _, other = await make_client("test", level="L1", name="Other")
    admin = await admin_token(http, runtime, "admin")
    r = await act(http, admin, "suspend-issuance", reason_code="key_compromise", client_id=cid)
    assert r.status_code == 200
    refused = await http.post("/v1/verifications", json=GOOD, headers=auth(key))
    accepted = await http.post("/v1/verifications", json=GOOD, headers=auth(other))
    assert (refused.status_code, accepted.status_code) == (503, 201)


@pytest.mark.parametrize(
    ("role", "body", "status", "code"),
    [
        ("admin", {"reason_code": "drill", "client_id": "cli_nope"}, 422, "unknown_client"),
        ("admin", {}, 422, "reason_required"),
        ("admin", {"reason_code": "because"}, 422, "invalid_reason_code"),
        ("reviewer", {"reason_code": "drill"}, 403, "insufficient_role"),
        ("auditor", {"reason_code": "drill"}, 403, "insufficient_role"),
    ],
    ids=["unknown-client", "no-reason", "unknown-reason", "reviewer", "auditor"],
)
@pytest.mark.parametrize("action", ["suspend-issuance", "revoke-tokens"])
async def test_bad_emergency_requests_change_nothing(
    http: httpx.AsyncClient,
    runtime: Runtime,
    action: str,
    role: str,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    """An unknown client, a missing or undocumented reason code, or a non-admin: 4xx, no change."""
    token = await admin_token(http, runtime, role)
    r = await act(http, token, action, **body)
    assert (r.status_code, r.json()["code"]) == (status, code)
    assert r.headers["content-type"] == "application/problem+json"
    assert await count(runtime, "SELECT count(*) FROM emergency_measures") == 0


async def test_revoke_all_makes_earlier_tokens_inactive_and_later_ones_work(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """After revoke-tokens every earlier token is inactive; a token issued afterwards is active
    and signed by a new key; the old key leaves the JWKS."""
    v = await verified(http, api_key, worker)
    old = await token_for(http, api_key, v["id"])
    assert (await introspect(http, api_key, old))["active"] is True
    old_kid = json.loads(_segment(old, 0))["kid"]
    admin = await admin_token(http, runtime, "admin")
    r = await act(http, admin, "revoke-tokens", reason_code="key_compromise")
    assert r.json()["revoked_tokens"] == 1
    assert (await introspect(http, api_key, old))["active"] is False
    new = await token_for(http, api_key, v["id"])
    assert (await introspect(http, api_key, new))["active"] is True
    kids = {k["kid"] for k in (await http.get("/.well-known/jwks.json")).json()["keys"]}
    assert old_kid not in kids
    assert json.loads(_segment(new, 0))["kid"] in kids


async def test_offline_verifier_rejects_earlier_tokens_once_it_refreshes_the_jwks(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any, worker: Worker
) -> None:
    """The SDK's offline TokenVerifier accepts a token before revoke-all and, with a refreshed
    key set, refuses it afterwards (its key was withdrawn)."""
    cid, key = await make_client("test", level="L1")
    token = await token_for(http, key, (await verified(http, key, worker))["id"])
    jwks_url = "http://testserver/.well-known/jwks.json"
    before = TokenVerifier(jwks_url, audience=cid, issuer=runtime.settings.issuer, http_client=http)
    assert (await before.averify(token)).verification_id
    admin = await admin_token(http, runtime, "admin")
    await act(http, admin, "revoke-tokens", reason_code="key_compromise")
    refreshed = TokenVerifier(
        jwks_url, audience=cid, issuer=runtime.settings.issuer, http_client=http
    )
    with pytest.raises(InvalidToken) as refused:
        await refreshed.averify(token)
    assert refused.value.reason == "unknown_key"


async def test_revoke_all_also_catches_a_token_committed_after_it(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """A token issued before the cutoff but whose row escaped the revocation is inactive."""
    v = await verified(http, api_key, worker)
    token = await token_for(http, api_key, v["id"])
    admin = await admin_token(http, runtime, "admin")
    await act(http, admin, "revoke-tokens", reason_code="security_incident")
    async with runtime.engine.begin() as conn:  # as if its issue had committed afterwards
        await conn.execute(text("UPDATE service_tokens SET revoked_at = NULL"))
    runtime.token_claims.clear()
    assert (await introspect(http, api_key, token))["active"] is False


async def test_revoke_for_one_client_keeps_other_clients_tokens(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any, worker: Worker
) -> None:
    """revoke-tokens with a client_id revokes that client's tokens only."""
    cid, key = await make_client("test", level="L1")
    _, other = await make_client("test", level="L1", name="Other")
    mine = await token_for(http, key, (await verified(http, key, worker))["id"])
    theirs = await token_for(http, other, (await verified(http, other, worker))["id"])
    admin = await admin_token(http, runtime, "admin")
    await act(http, admin, "revoke-tokens", reason_code="key_compromise", client_id=cid)
    assert (await introspect(http, key, mine))["active"] is False
    assert (await introspect(http, other, theirs))["active"] is True


def _segment(token: str, index: int) -> bytes:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@pytest.mark.e2e
async def test_revoke_all_from_the_cli_reaches_a_running_server(
    runtime: Runtime, api_key: str, tmp_path: Path
) -> None:
    """With the token cached in a served process, the CLI's revoke-all (another process) makes
    it inactive there at once."""
    extra = {"REALNAME_REDIS_URL": runtime.settings.redis_url} if runtime.settings.redis_url else {}
    with serve(runtime.settings, log_path=tmp_path / "serve.log", **extra) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            v = (await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))).json()
            for _ in range(100):
                got = await http.get(f"/v1/verifications/{v['id']}", headers=auth(api_key))
                if got.json()["status"] == "verified":
                    break
                await asyncio.sleep(0.1)
            token = await token_for(http, api_key, v["id"])
            assert (await introspect(http, api_key, token))["active"] is True
            assert (await introspect(http, api_key, token))["active"] is True  # cached
            # In a thread: this test's own runtime hears the same invalidations and must be
            # free to acknowledge them while the CLI waits for every process.
            done = await asyncio.to_thread(
                run_cli,
                runtime.settings,
                "emergency",
                "revoke-tokens",
                "--reason-code",
                "drill",
                **extra,
            )
            assert done.returncode == 0, done.stderr
            assert (await introspect(http, api_key, token))["active"] is False


async def test_crash_between_revocation_and_announcement_loses_neither(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """A crash after the revocation is written but before it is announced leaves neither."""
    v = await verified(http, api_key, worker)
    token = await token_for(http, api_key, v["id"])
    done = run_cli(
        runtime.settings,
        "emergency",
        "revoke-tokens",
        "--reason-code",
        "drill",
        REALNAME_CRASH_AT="emergency_before_announce",
    )
    assert done.returncode == EXIT_CODE
    assert await count(runtime, "SELECT count(*) FROM emergency_measures") == 0
    assert await count(runtime, "SELECT count(*) FROM service_tokens WHERE revoked_at IS NULL") == 1
    assert await count(runtime, "SELECT count(*) FROM events WHERE type = 'token.revoked'") == 0
    assert (await introspect(http, api_key, token))["active"] is True
    async with runtime.sessions() as session:
        assert (await audit.verify_chain(session)).ok


async def test_revocation_and_its_announcement_land_together(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """revoke-tokens writes the measure, the revocations and its audit event, naming each other."""
    v = await verified(http, api_key, worker)
    await token_for(http, api_key, v["id"])
    done = run_cli(runtime.settings, "emergency", "revoke-tokens", "--reason-code", "drill")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    async with runtime.engine.connect() as conn:
        action = (
            await conn.execute(
                text("SELECT action FROM audit_events WHERE seq = :s"), {"s": out["audit_seq"]}
            )
        ).scalar_one()
    assert action == "emergency.revoke-tokens"
    assert await count(runtime, "SELECT count(*) FROM service_tokens WHERE revoked_at IS NULL") == 0


async def test_revoke_all_announces_each_token_to_its_client(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """revoke-tokens is announced as one token.revoked event per token, with its jti."""
    v = await verified(http, api_key, worker)
    token = await token_for(http, api_key, v["id"])
    jti = json.loads(_segment(token, 1))["jti"]
    admin = await admin_token(http, runtime, "admin")
    assert (await act(http, admin, "revoke-tokens", reason_code="drill")).status_code == 200
    listed = (await http.get("/v1/events", headers=auth(api_key))).json()["data"]
    revoked = [e for e in listed if e["type"] == "token.revoked"]
    assert [e["data"]["jti"] for e in revoked] == [jti]
    assert revoked[0]["data"]["verification_id"] == v["id"]
    assert revoked[0]["data"]["reason"] == "emergency"


async def test_suspension_and_resumption_are_announced_to_the_clients_in_scope(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any
) -> None:
    """A suspension for one client is announced to that client only; its end is announced too."""
    cid, key = await make_client("test", level="L1")
    _, other = await make_client("test", level="L1", name="Other")
    admin = await admin_token(http, runtime, "admin")
    r = await act(http, admin, "suspend-issuance", reason_code="drill", client_id=cid)
    assert r.status_code == 200, r.text
    r = await act(http, admin, "resume-issuance", reason_code="incident_resolved", client_id=cid)
    assert r.status_code == 200, r.text
    mine = (await http.get("/v1/events", headers=auth(key))).json()["data"]
    assert [(e["type"], e["data"]["reason"]) for e in mine] == [
        ("issuance.suspended", "drill"),
        ("issuance.resumed", "incident_resolved"),
    ]
    assert (await http.get("/v1/events", headers=auth(other))).json()["data"] == []


async def test_quarantined_verifier_is_not_called_and_goes_to_review(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str, worker: Worker
) -> None:
    """With the registry verifier quarantined, checks end in needs_review; released, they pass."""
    admin = await admin_token(http, runtime, "admin")
    r = await act(
        http,
        admin,
        "quarantine-provider",
        reason_code="provider_compromised",
        provider="mock_id_registry",
    )
    assert r.status_code == 200, r.text
    held = await start(http, api_key, worker)
    assert (held["status"], held["status_reason"]) == ("needs_review", "provider_quarantined")
    r = await act(
        http,
        admin,
        "release-provider",
        reason_code="incident_resolved",
        provider="mock_id_registry",
    )
    assert r.status_code == 200
    passed = await start(http, api_key, worker, external_user_id="u2", id_number=OTHER_ID)
    assert passed["status"] == "verified"


async def test_quarantine_of_an_unknown_provider_is_refused(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """quarantine-provider with a name no verifier or sender has: 422 unknown_provider."""
    admin = await admin_token(http, runtime, "admin")
    r = await act(http, admin, "quarantine-provider", reason_code="drill", provider="nope")
    assert (r.status_code, r.json()["code"]) == (422, "unknown_provider")


async def test_emergency_cli_refuses_an_unknown_client(runtime: Runtime) -> None:
    """The CLI answers an unknown client with the stable code and exit status 2."""
    done = run_cli(
        runtime.settings,
        "emergency",
        "suspend-issuance",
        "--reason-code",
        "drill",
        "--client-id",
        "cli_nope",
    )
    assert done.returncode == 2
    assert json.loads(done.stderr)["error"] == "unknown_client"
