"""Service tokens: issued only when verified, offline-verifiable, introspectable, revocable."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text, update

from app.models import Verification
from app.models._types import utcnow
from app.runtime import Runtime
from app.services.tokens import is_adult
from app.worker import Worker
from tests.conftest import auth
from tests.test_intake import GOOD
from tests.test_lifecycle import inbox_code, start, submit


async def verified(
    http: httpx.AsyncClient, key: str, worker: Worker, **changes: Any
) -> dict[str, Any]:
    v = await start(http, key, worker, **changes)
    if v["status"] == "awaiting_code":
        r = await submit(http, key, v["id"], await inbox_code(http, key, v["id"]))
        v = r.json()
    assert v["status"] == "verified", v
    return v


async def token_for(http: httpx.AsyncClient, key: str, vid: str) -> str:
    r = await http.post(f"/v1/verifications/{vid}/tokens", headers=auth(key))
    assert r.status_code == 201, r.text
    return str(r.json()["access_token"])


async def introspect(http: httpx.AsyncClient, key: str, token: str) -> dict[str, Any]:
    r = await http.post("/v1/tokens/introspect", json={"token": token}, headers=auth(key))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def jwks_key(http: httpx.AsyncClient, kid: str) -> Ed25519PublicKey:
    keys = (await http.get("/.well-known/jwks.json")).json()["keys"]
    x = next(k["x"] for k in keys if k["kid"] == kid)
    return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))


@pytest.fixture
async def client_ids(make_client: Any) -> tuple[str, str]:
    cid, key = await make_client("test", level="L1")
    return str(cid), str(key)


async def test_token_carries_the_documented_claims(
    http: httpx.AsyncClient, client_ids: tuple[str, str], worker: Worker
) -> None:
    """An RFC 9068 JWT (typ at+jwt, EdDSA, kid) with iss = the public URL, aud = client_id = the
    client, and sub, lvl, adult, vid, jti, iat, exp."""
    cid, key = client_ids
    v = await verified(http, key, worker)
    token = await token_for(http, key, v["id"])
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["typ"]) == ("EdDSA", "at+jwt")
    public = await jwks_key(http, header["kid"])
    claims = jwt.decode(
        token, public, algorithms=["EdDSA"], audience=cid, issuer="http://127.0.0.1:8000"
    )
    assert claims["client_id"] == cid
    assert (claims["aud"], claims["vid"], claims["lvl"], claims["adult"]) == (
        cid,
        v["id"],
        "L1",
        True,
    )
    assert claims["sub"].startswith("sub_")
    assert claims["jti"].startswith("tok_")
    assert 0 < claims["exp"] - claims["iat"] <= 900


@pytest.mark.parametrize(("name", "status"), [("不一致", "rejected"), ("服务异常", "needs_review")])
async def test_no_token_unless_verified(
    http: httpx.AsyncClient, api_key: str, worker: Worker, name: str, status: str
) -> None:
    """Any status but verified is a 409 verification_not_verified naming the missing checks."""
    v = await start(http, api_key, worker, real_name=name)
    assert v["status"] == status
    r = await http.post(f"/v1/verifications/{v['id']}/tokens", headers=auth(api_key))
    assert r.status_code == 409
    assert r.json()["code"] == "verification_not_verified"
    assert r.json()["missing_checks"] == ["id_registry"]


@pytest.mark.usefixtures("queued_checks")
async def test_pending_verification_gets_no_token(http: httpx.AsyncClient, api_key: str) -> None:
    """A verification still pending its checks gets no token."""
    vid = (await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))).json()["id"]
    r = await http.post(f"/v1/verifications/{vid}/tokens", headers=auth(api_key))
    assert (r.status_code, r.json()["code"]) == (409, "verification_not_verified")


async def test_introspection_active_then_revoked(
    http: httpx.AsyncClient, client_ids: tuple[str, str], worker: Worker
) -> None:
    """A fresh token is active; after revoke it is inactive at once."""
    cid, key = client_ids
    v = await verified(http, key, worker)
    token = await token_for(http, key, v["id"])
    active = await introspect(http, key, token)
    assert active["active"] is True
    assert (active["client_id"], active["vid"], active["lvl"]) == (cid, v["id"], "L1")
    r = await http.post("/v1/tokens/revoke", json={"token": token}, headers=auth(key))
    assert r.status_code == 200
    assert await introspect(http, key, token) == {"active": False}


async def test_token_of_another_client_is_inactive(
    http: httpx.AsyncClient, make_client: Any, worker: Worker
) -> None:
    """Client B introspecting client A's token gets active=false, and cannot revoke it."""
    _, a = await make_client("test", level="L1", name="A")
    _, b = await make_client("test", level="L1", name="B")
    v = await verified(http, a, worker)
    token = await token_for(http, a, v["id"])
    assert await introspect(http, b, token) == {"active": False}
    await http.post("/v1/tokens/revoke", json={"token": token}, headers=auth(b))
    assert (await introspect(http, a, token))["active"] is True


async def test_subject_is_stable_per_client_and_differs_between_clients(
    http: httpx.AsyncClient, make_client: Any, worker: Worker
) -> None:
    """Two tokens for one person at one client share sub; another client sees another sub."""
    _, a = await make_client("test", level="L1", name="A")
    _, b = await make_client("test", level="L1", name="B")
    va = await verified(http, a, worker)
    vb = await verified(http, b, worker)

    def sub(token: str) -> str:
        return str(jwt.decode(token, options={"verify_signature": False})["sub"])

    first, second = await token_for(http, a, va["id"]), await token_for(http, a, va["id"])
    assert sub(first) == sub(second)
    assert sub(first) != sub(await token_for(http, b, vb["id"]))


def _forge(token: str, **claims: Any) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _alg_none(token: str) -> str:
    _, payload, _ = token.split(".")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return f"{header}.{payload}."


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(_alg_none, id="alg-none"),
        pytest.param(lambda t: _forge(t, lvl="L3"), id="tampered-claims"),
        pytest.param(
            lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"),
            id="tampered-signature",
        ),
        pytest.param(
            lambda t: jwt.encode(
                jwt.decode(t, options={"verify_signature": False}),
                "k" * 32,
                algorithm="HS256",
                headers={"kid": jwt.get_unverified_header(t)["kid"]},
            ),
            id="hs256",
        ),
        pytest.param(
            lambda t: jwt.encode(
                {**jwt.decode(t, options={"verify_signature": False})},
                Ed25519PrivateKey.generate(),
                algorithm="EdDSA",
                headers={"kid": jwt.get_unverified_header(t)["kid"]},
            ),
            id="foreign-key",
        ),
        pytest.param(lambda t: "not.a.jwt", id="garbage"),
    ],
)
async def test_forged_tokens_are_inactive(
    http: httpx.AsyncClient, client_ids: tuple[str, str], worker: Worker, mangle: Any
) -> None:
    """alg none, wrong algorithm, tampered, foreign-signed and garbage tokens are inactive."""
    _, key = client_ids
    v = await verified(http, key, worker)
    token = await token_for(http, key, v["id"])
    assert await introspect(http, key, mangle(token)) == {"active": False}


async def test_hs256_with_the_public_key_as_secret_is_inactive(
    http: httpx.AsyncClient, client_ids: tuple[str, str], worker: Worker
) -> None:
    """The key-confusion attack (HS256 keyed with the published Ed25519 key) is inactive."""
    _, key = client_ids
    v = await verified(http, key, worker)
    token = await token_for(http, key, v["id"])
    kid = jwt.get_unverified_header(token)["kid"]
    x = next(
        k["x"] for k in (await http.get("/.well-known/jwks.json")).json()["keys"] if k["kid"] == kid
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(
        claims,
        base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)),
        algorithm="HS256",
        headers={"kid": kid},
    )
    assert await introspect(http, key, forged) == {"active": False}


async def test_expired_token_is_inactive(
    http: httpx.AsyncClient, client_ids: tuple[str, str], worker: Worker, runtime: Runtime
) -> None:
    """A token past its exp is inactive (signed by the real key, so only expiry fails)."""
    _, key = client_ids
    v = await verified(http, key, worker)
    token = await token_for(http, key, v["id"])
    kid = jwt.get_unverified_header(token)["kid"]
    async with runtime.sessions() as session:
        signing = await runtime.keyring.signing_key(session)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = int((utcnow() - timedelta(seconds=120)).timestamp())
    expired = jwt.encode(claims, signing.private, algorithm="EdDSA", headers={"kid": kid})
    assert await introspect(http, key, expired) == {"active": False}


@pytest.mark.parametrize("action", ["erase", "correct", "lapse"])
async def test_tokens_die_when_the_verification_no_longer_holds(
    http: httpx.AsyncClient,
    client_ids: tuple[str, str],
    worker: Worker,
    runtime: Runtime,
    action: str,
) -> None:
    """Erasure, a correction and the verification lapsing make introspection inactive at once."""
    _, key = client_ids
    v = await verified(http, key, worker)
    token = await token_for(http, key, v["id"])
    if action == "erase":
        assert (
            await http.delete(f"/v1/verifications/{v['id']}", headers=auth(key))
        ).status_code == 200
    elif action == "correct":
        r = await http.post(
            "/v1/verifications", json={**GOOD, "real_name": "张三丰"}, headers=auth(key)
        )
        assert r.status_code == 201
    else:
        async with runtime.sessions() as session, session.begin():
            await session.execute(
                update(Verification).values(expires_at=utcnow() - timedelta(seconds=1))
            )
    assert await introspect(http, key, token) == {"active": False}


async def test_correction_blocks_new_tokens_until_it_passes(
    http: httpx.AsyncClient, client_ids: tuple[str, str], worker: Worker
) -> None:
    """While a correction runs the old verification issues no token; once it passes, the new one
    issues tokens and the old one is revoked as corrected."""
    _, key = client_ids
    old = await verified(http, key, worker)
    new = (
        await http.post(
            "/v1/verifications", json={**GOOD, "real_name": "张三丰"}, headers=auth(key)
        )
    ).json()
    blocked = await http.post(f"/v1/verifications/{old['id']}/tokens", headers=auth(key))
    assert blocked.status_code == 409
    await worker.run_until_idle()
    assert (await http.get(f"/v1/verifications/{new['id']}", headers=auth(key))).json()[
        "status"
    ] == "verified"
    await token_for(http, key, new["id"])
    old_now = (await http.get(f"/v1/verifications/{old['id']}", headers=auth(key))).json()
    assert (old_now["status"], old_now["status_reason"]) == ("revoked", "corrected")


async def test_failed_correction_leaves_the_old_verification_usable(
    http: httpx.AsyncClient, client_ids: tuple[str, str], worker: Worker
) -> None:
    """A correction that is rejected gives the old verification its tokens back."""
    _, key = client_ids
    old = await verified(http, key, worker)
    await http.post("/v1/verifications", json={**GOOD, "real_name": "不一致"}, headers=auth(key))
    await worker.run_until_idle()
    await token_for(http, key, old["id"])


async def test_adult_claim_uses_only_the_coming_of_age_date(
    http: httpx.AsyncClient, client_ids: tuple[str, str], worker: Worker, runtime: Runtime
) -> None:
    """A minor (born 2010) is adult=false; neither the birth date nor the coming-of-age date is
    stored in plaintext."""
    _, key = client_ids
    v = await verified(http, key, worker, id_number="110105201001010010")
    claims = jwt.decode(await token_for(http, key, v["id"]), options={"verify_signature": False})
    assert claims["adult"] is False
    async with runtime.engine.connect() as conn:
        dump = str((await conn.execute(text("SELECT * FROM identities"))).all())
    for leaked in ("2010-01-01", "2010, 1, 1", "2028-01-01", "2028, 1, 1", "20100101"):
        assert leaked not in dump


def test_adult_is_decided_in_the_legal_time_zone() -> None:
    """Someone coming of age on 1 Jan is adult from midnight Beijing time, not UTC."""
    from datetime import UTC, date, datetime

    eve_utc = datetime(2027, 12, 31, 16, 30, tzinfo=UTC)  # 00:30 on 1 Jan 2028 in Beijing
    assert is_adult(date(2028, 1, 1), "Asia/Shanghai", eve_utc)
    assert not is_adult(date(2028, 1, 1), "UTC", eve_utc)


async def test_key_rotation_keeps_old_tokens_verifiable(
    http: httpx.AsyncClient, client_ids: tuple[str, str], worker: Worker, runtime: Runtime
) -> None:
    """After `keys rotate` the JWKS has both keys; old tokens stay active, new ones use the new."""
    from tests.support import run_cli

    _, key = client_ids
    v = await verified(http, key, worker)
    old = await token_for(http, key, v["id"])
    assert run_cli(runtime.settings, "keys", "rotate").returncode == 0
    runtime.keyring.forget_active()
    new = await token_for(http, key, v["id"])
    kids = {k["kid"] for k in (await http.get("/.well-known/jwks.json")).json()["keys"]}
    assert {jwt.get_unverified_header(old)["kid"], jwt.get_unverified_header(new)["kid"]} <= kids
    assert jwt.get_unverified_header(old)["kid"] != jwt.get_unverified_header(new)["kid"]
    assert (await introspect(http, key, old))["active"] is True


async def test_private_keys_are_not_stored_in_plaintext(
    runtime: Runtime, http: httpx.AsyncClient
) -> None:
    """The signing key table holds only a sealed private key."""
    from cryptography.hazmat.primitives import serialization

    async with runtime.sessions() as session:
        signing = await runtime.keyring.signing_key(session)
    raw = signing.private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    async with runtime.engine.connect() as conn:
        dump = str((await conn.execute(text("SELECT * FROM signing_keys"))).all())
    assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() not in dump
    assert raw.hex() not in dump


# -- the property: no token for any status but verified ------------------------------------------

ACTIONS = st.lists(
    st.sampled_from(["run", "right", "wrong", "resend", "token", "erase", "revoke_token"]),
    max_size=8,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@pytest.mark.usefixtures("queued_checks")
@given(actions=ACTIONS, name=st.sampled_from(["张三", "不一致", "服务异常"]))
async def test_token_only_ever_for_verified(
    http: httpx.AsyncClient, make_client: Any, runtime: Runtime, actions: list[str], name: str
) -> None:
    """Over random orders of API calls, a token is issued exactly when the status is verified."""
    _, key = await make_client("test", level="L2", name="prop")
    worker = Worker(runtime)
    await runtime.limits.reset()
    vid = (
        await http.post(
            "/v1/verifications",
            json={
                **GOOD,
                "real_name": name,
                "external_user_id": f"p-{id(actions)}-{len(actions)}-{name}",
            },
            headers=auth(key),
        )
    ).json()
    if "id" not in vid:  # identity already registered by an earlier example for this client
        return
    vid = vid["id"]
    issued: list[str] = []
    for action in actions:
        status = (await http.get(f"/v1/verifications/{vid}", headers=auth(key))).json()["status"]
        if action == "run":
            await worker.run_until_idle(max_wait=0.3)
        elif action in {"right", "wrong"} and status == "awaiting_code":
            code = await inbox_code(http, key, vid)
            await submit(
                http, key, vid, code if action == "right" else f"{(int(code) + 1) % 1_000_000:06d}"
            )
        elif action == "resend":
            await http.post(f"/v1/verifications/{vid}/sms-code/resend", headers=auth(key))
        elif action == "erase":
            await http.delete(f"/v1/verifications/{vid}", headers=auth(key))
        elif action == "revoke_token" and issued:
            await http.post("/v1/tokens/revoke", json={"token": issued[-1]}, headers=auth(key))
        elif action == "token":
            before = (await http.get(f"/v1/verifications/{vid}", headers=auth(key))).json()[
                "status"
            ]
            r = await http.post(f"/v1/verifications/{vid}/tokens", headers=auth(key))
            assert (r.status_code == 201) == (before == "verified"), (before, r.status_code)
            if r.status_code == 201:
                issued.append(r.json()["access_token"])
    final = (await http.get(f"/v1/verifications/{vid}", headers=auth(key))).json()["status"]
    for token in issued:
        active = (await introspect(http, key, token))["active"]
        assert not active or final == "verified"
    # Leave no state for the next example: erase what this one made.
    await http.delete(f"/v1/verifications/{vid}", headers=auth(key))


async def test_overlapping_corrections_leave_one_verified(
    http: httpx.AsyncClient, client_ids: tuple[str, str], worker: Worker
) -> None:
    """Two corrections in a row: the older unfinished one is superseded, and the user ends
    with exactly one verified verification."""
    _, key = client_ids
    v1 = await verified(http, key, worker)
    v2 = (
        await http.post(
            "/v1/verifications", json={**GOOD, "id_number": "440305199003071236"}, headers=auth(key)
        )
    ).json()
    v3 = (
        await http.post(
            "/v1/verifications", json={**GOOD, "id_number": "310104200002290030"}, headers=auth(key)
        )
    ).json()
    await worker.run_until_idle()
    statuses = {
        vid: (await http.get(f"/v1/verifications/{vid}", headers=auth(key))).json()["status"]
        for vid in (v1["id"], v2["id"], v3["id"])
    }
    assert statuses == {v1["id"]: "revoked", v2["id"]: "revoked", v3["id"]: "verified"}
