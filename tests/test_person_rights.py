"""The person's rights: a data export (PIPL Art. 45) and signed consent receipts (Art. 41)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from app.runtime import Runtime
from app.worker import Worker
from tests.conftest import auth
from tests.test_admin_api import admin_token, bearer
from tests.test_intake import GOOD
from tests.test_tokens import token_for, verified

OTHER_ID = "440305199003071236"


async def test_verification_answer_carries_the_consent(
    http: httpx.AsyncClient, api_key: str
) -> None:
    """The answer names the policy version, its SHA-256, the time and a receipt id."""
    created = (await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))).json()
    policy = (await http.get("/v1/policies/2026-01")).json()
    consent = created["consent"]
    assert consent["policy_version"] == "2026-01"
    assert consent["policy_sha256"] == policy["sha256"]
    assert consent["receipt_id"].startswith("rcpt_")
    assert consent["consented_at"]


async def test_consent_receipt_verifies_with_the_published_keys(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """The receipt is a JWS that verifies against the JWKS, for this client, with the consent."""
    cid, key = await make_client("test", level="L1")
    created = (await http.post("/v1/verifications", json=GOOD, headers=auth(key))).json()
    r = await http.get(f"/v1/verifications/{created['id']}/consent-receipt", headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    jwks = jwt.PyJWKSet.from_dict((await http.get("/.well-known/jwks.json")).json())
    header = jwt.get_unverified_header(body["receipt"])
    assert header["typ"] == "consent-receipt+jwt"
    claims = jwt.decode(
        body["receipt"], jwks[header["kid"]].key, algorithms=["EdDSA"], audience=cid
    )
    assert claims["jti"] == created["consent"]["receipt_id"]
    assert claims["policy_sha256"] == created["consent"]["policy_sha256"]
    assert claims["vid"] == created["id"]


async def test_altered_consent_receipt_does_not_verify(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """Changing the receipt's policy version breaks its signature."""
    cid, key = await make_client("test", level="L1")
    created = (await http.post("/v1/verifications", json=GOOD, headers=auth(key))).json()
    receipt = (
        await http.get(f"/v1/verifications/{created['id']}/consent-receipt", headers=auth(key))
    ).json()["receipt"]
    head, payload, sig = receipt.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["policy_version"] = "2099-01"
    forged = ".".join([head, jwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), sig])
    jwks = jwt.PyJWKSet.from_dict((await http.get("/.well-known/jwks.json")).json())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            forged,
            jwks[jwt.get_unverified_header(forged)["kid"]].key,
            algorithms=["EdDSA"],
            audience=cid,
        )


async def test_export_holds_the_users_history(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """The export shows statuses with times, checks, consent, tokens, events and audit events."""
    v = await verified(http, api_key, worker)
    await token_for(http, api_key, v["id"])
    r = await http.get(f"/v1/verifications/{v['id']}/export", headers=auth(api_key))
    assert r.status_code == 200, r.text
    doc = r.json()
    (mine,) = doc["verifications"]
    assert [h["status"] for h in mine["status_history"]] == ["pending", "verified"]
    assert mine["checks"][0]["status"] == "passed"
    assert mine["consent"]["policy_version"] == "2026-01"
    assert len(mine["tokens"]) == 1
    assert mine["tokens"][0]["revoked_at"] is None
    assert {e["action"] for e in mine["audit_events"]} >= {"verification.created", "token.issued"}
    assert "verification.verified" in {e["type"] for e in mine["events"]}
    assert mine["masked"]["id_number"] == "110105********002X"


async def test_export_holds_nothing_of_anyone_else(
    http: httpx.AsyncClient, make_client: Any, worker: Worker
) -> None:
    """Neither the same person at another client nor another user of this client appears."""
    _, key = await make_client("test", level="L1")
    other_cid, other_key = await make_client("test", level="L1", name="Other")
    mine = await verified(http, key, worker)
    theirs = await verified(http, other_key, worker)  # the same person, at another client
    neighbour = await verified(
        http, key, worker, external_user_id="someone-else", id_number=OTHER_ID
    )
    r = await http.get(f"/v1/verifications/{mine['id']}/export", headers=auth(key))
    body = r.text
    assert mine["id"] in body
    for foreign in (theirs["id"], other_cid, neighbour["id"], "someone-else"):
        assert foreign not in body
    for plaintext in (GOOD["real_name"], GOOD["id_number"], GOOD["phone"]):
        assert plaintext not in body


async def test_export_of_another_clients_verification_is_not_found(
    http: httpx.AsyncClient, make_client: Any, worker: Worker
) -> None:
    """A client cannot export another client's user."""
    _, key = await make_client("test", level="L1")
    _, other_key = await make_client("test", level="L1", name="Other")
    theirs = await verified(http, other_key, worker)
    r = await http.get(f"/v1/verifications/{theirs['id']}/export", headers=auth(key))
    assert (r.status_code, r.json()["code"]) == (404, "not_found")


async def test_export_is_audited(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, worker: Worker
) -> None:
    """Each export is an audit event naming the verification and the exporter."""
    v = await verified(http, api_key, worker)
    doc = (await http.get(f"/v1/verifications/{v['id']}/export", headers=auth(api_key))).json()
    async with runtime.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT action, subject_id, actor_type FROM audit_events WHERE seq = :s"),
                {"s": doc["export_audit_seq"]},
            )
        ).one()
    assert tuple(row) == ("verification.exported", v["id"], "client")


async def test_admin_export_matches_the_client_export(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, worker: Worker
) -> None:
    """The admin API gives the same document for a verification."""
    v = await verified(http, api_key, worker)
    token = await admin_token(http, runtime, "auditor")
    r = await http.get(f"/v1/admin/exports/{v['id']}", headers=bearer(token))
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["verifications"]] == [v["id"]]
