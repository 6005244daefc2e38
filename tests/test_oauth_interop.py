"""OAuth 2.0 as the RFCs write it: introspection (RFC 7662) and revocation (RFC 7009) with form
bodies and HTTP Basic client authentication, JWT access tokens (RFC 9068), and discovery
(RFC 8414), exercised by Authlib's client and PyJWT's JWKS client against `realname serve`."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from authlib.integrations.requests_client import OAuth2Session
from sqlalchemy import update
from sqlmodel import col

from app.db import session_scope
from app.models import ApiKey
from app.models._types import utcnow
from app.runtime import Runtime
from app.services import tokens
from app.worker import Worker
from tests.conftest import auth
from tests.support import new_person, run_cli, serve

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(client_id: str, api_key: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{api_key}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@pytest.fixture
def service(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    with serve(runtime.settings, log_path=tmp_path / "serve.log") as base:
        yield base


@pytest.fixture
def l1_client(runtime: Runtime) -> tuple[str, str]:
    """A test-mode L1 client made by the CLI: (client_id, api_key)."""
    out = run_cli(
        runtime.settings, "clients", "create", "--name", "gw", "--mode", "test", "--level", "L1"
    )
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    return str(created["client_id"]), str(created["api_key"])


def served_token(base: str, api_key: str) -> str:
    """A token for a freshly verified L1 user of the served instance."""
    with httpx.Client(base_url=base, headers=auth(api_key), timeout=30) as http:
        vid = http.post("/v1/verifications", json=new_person()).json()["id"]
        deadline = time.monotonic() + 20
        while http.get(f"/v1/verifications/{vid}").json()["status"] != "verified":
            assert time.monotonic() < deadline, "the verification did not pass in 20 s"
            time.sleep(0.1)
        return str(http.post(f"/v1/verifications/{vid}/tokens").json()["access_token"])


async def in_process_token(http: httpx.AsyncClient, api_key: str, worker: Worker) -> str:
    created = await http.post("/v1/verifications", json=new_person(), headers=auth(api_key))
    await worker.run_until_idle()
    issued = await http.post(
        f"/v1/verifications/{created.json()['id']}/tokens", headers=auth(api_key)
    )
    return str(issued.json()["access_token"])


@pytest.mark.e2e
def test_authlib_introspects_and_revokes_with_form_bodies_and_basic_auth(
    service: str, l1_client: tuple[str, str]
) -> None:
    """Authlib's OAuth2Session (client_secret_basic, form bodies) introspects, revokes, and sees
    the token inactive afterwards."""
    client_id, api_key = l1_client
    token = served_token(service, api_key)
    with OAuth2Session(
        client_id, api_key, token_endpoint_auth_method="client_secret_basic"
    ) as oauth:
        active = oauth.introspect_token(f"{service}/v1/tokens/introspect", token=token)
        revoked = oauth.revoke_token(
            f"{service}/v1/tokens/revoke", token=token, token_type_hint="access_token"
        )
        after = oauth.introspect_token(f"{service}/v1/tokens/introspect", token=token)
    assert active.status_code == 200
    assert active.json()["active"] is True
    assert active.json()["client_id"] == client_id
    assert active.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert active.request.headers["Authorization"].startswith("Basic ")
    assert revoked.status_code == 200
    assert after.json() == {"active": False}


@pytest.mark.e2e
def test_discovery_drives_a_jwks_client_that_verifies_a_token(
    service: str, l1_client: tuple[str, str]
) -> None:
    """RFC 8414 metadata names the issuer and jwks_uri; PyJWKClient at that URI verifies a
    token whose iss is that issuer."""
    client_id, api_key = l1_client
    token = served_token(service, api_key)
    meta = httpx.get(f"{service}/.well-known/oauth-authorization-server").json()
    signing_key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key,
        algorithms=meta["access_token_signing_alg_values_supported"],
        audience=client_id,
        issuer=meta["issuer"],
    )
    assert meta["issuer"] == service
    assert meta["introspection_endpoint"] == f"{service}/v1/tokens/introspect"
    assert meta["revocation_endpoint"] == f"{service}/v1/tokens/revoke"
    assert meta["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert meta["revocation_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert claims["client_id"] == client_id


async def test_json_bodies_and_bearer_keys_keep_working(
    http: httpx.AsyncClient, make_client: Any, worker: Worker
) -> None:
    """Existing callers' JSON body with a Bearer API key still introspects."""
    _, api_key = await make_client("test", level="L1")
    token = await in_process_token(http, api_key, worker)
    r = await http.post("/v1/tokens/introspect", json={"token": token}, headers=auth(api_key))
    assert r.json()["active"] is True


async def test_revoking_an_unknown_token_answers_200(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """RFC 7009 section 2.2: an invalid or unknown token is not an error."""
    client_id, api_key = await make_client("test", level="L1")
    r = await http.post(
        "/v1/tokens/revoke",
        content="token=not-a-token",
        headers={**FORM, **basic(client_id, api_key)},
    )
    assert r.status_code == 200


async def test_inactive_answer_is_only_active_false(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """RFC 7662 section 2.2: an inactive token gets {"active": false} and nothing else."""
    client_id, api_key = await make_client("test", level="L1")
    r = await http.post(
        "/v1/tokens/introspect", content="token=abc", headers={**FORM, **basic(client_id, api_key)}
    )
    assert (r.status_code, r.json()) == (200, {"active": False})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("token=a&token=b", id="repeated"),
        pytest.param("token_type_hint=access_token", id="missing"),
        pytest.param("token=" + "a" * 5000, id="oversized"),
        pytest.param("token=a%00b", id="nul"),
    ],
)
async def test_bad_form_bodies_are_rfc_invalid_request(
    http: httpx.AsyncClient, make_client: Any, body: str
) -> None:
    """Repeated, missing, oversized or NUL-carrying token fields: 400 invalid_request (RFC 6749
    section 5.2 ``error`` and problem+json ``code``), never 5xx."""
    client_id, api_key = await make_client("test", level="L1")
    r = await http.post(
        "/v1/tokens/introspect", content=body, headers={**FORM, **basic(client_id, api_key)}
    )
    assert r.status_code == 400
    assert (r.json()["code"], r.json()["error"]) == ("invalid_request", "invalid_request")


async def test_wrong_basic_credentials_get_401_with_a_basic_challenge(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """A wrong API key, or a right key under another client id: 401 invalid_client with
    ``WWW-Authenticate: Basic`` (RFC 6749 section 5.2)."""
    client_id, api_key = await make_client("test", level="L1")
    other_id, _ = await make_client("test", level="L1")
    for headers in (basic(client_id, api_key + "x"), basic(other_id, api_key)):
        r = await http.post("/v1/tokens/revoke", content="token=t", headers={**FORM, **headers})
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic ")
        assert (r.json()["code"], r.json()["error"]) == ("invalid_client", "invalid_client")


async def test_garbled_basic_header_is_invalid_client(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """A Basic header that is not base64 of ``id:key`` is a 401 invalid_client, not a 5xx."""
    r = await http.post(
        "/v1/tokens/introspect",
        content="token=t",
        headers={**FORM, "Authorization": "Basic %%%not-base64"},
    )
    assert (r.status_code, r.json()["code"]) == (401, "invalid_client")


async def test_basic_auth_of_a_disabled_client_is_refused(
    http: httpx.AsyncClient, make_client: Any, runtime: Runtime
) -> None:
    """Once the client's key is revoked, Basic authentication with it gets 401 invalid_client."""
    client_id, api_key = await make_client("test", level="L1")
    async with session_scope(runtime.sessions) as session:
        await session.execute(
            update(ApiKey).where(col(ApiKey.client_id) == client_id).values(revoked_at=utcnow())
        )
    runtime.api_keys.clear()
    r = await http.post(
        "/v1/tokens/introspect", content="token=t", headers={**FORM, **basic(client_id, api_key)}
    )
    assert (r.status_code, r.json()["code"]) == (401, "invalid_client")


async def test_tokens_with_the_former_issuer_stay_active_until_they_expire(
    http: httpx.AsyncClient, make_client: Any, worker: Worker, runtime: Runtime
) -> None:
    """A token signed with iss ``urn:realname`` (before the issuer became the public URL) still
    introspects active."""
    client_id, api_key = await make_client("test", level="L1")
    token = await in_process_token(http, api_key, worker)
    claims = jwt.decode(token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(token)["kid"]
    async with session_scope(runtime.sessions) as session:
        key = await runtime.keyring.signing_key(session)
    assert key.kid == kid
    legacy = jwt.encode(
        {**claims, "iss": tokens.LEGACY_ISSUER},
        key.private,
        algorithm="EdDSA",
        headers={"kid": kid},
    )
    r = await http.post(
        "/v1/tokens/introspect",
        content=f"token={legacy}",
        headers={**FORM, **basic(client_id, api_key)},
    )
    assert r.json()["active"] is True
