"""The SDK against a real `realname serve` process: the whole integrator flow over HTTP."""

# No ``from __future__ import annotations``: one test defines a FastAPI route whose annotations
# FastAPI resolves at runtime.

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

import realname_sdk
from app.runtime import Runtime
from realname_sdk import (
    AsyncRealnameClient,
    Claims,
    NotVerified,
    RealnameClient,
    TokenVerifier,
)
from realname_sdk.fastapi import install_problem_handler, require_verified
from tests.support import run_cli, serve

pytestmark = pytest.mark.e2e

FAST = {"REALNAME_CHECK_RETRY_BACKOFF_SECONDS": "0.05", "REALNAME_WORKER_POLL_SECONDS": "0.2"}
PERSON = {
    "external_user_id": "user-1",
    "real_name": "张三",
    "id_number": "11010519491231002X",
    "phone": "13800138000",
}


@pytest.fixture
def service(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    with serve(runtime.settings, log_path=tmp_path / "serve.log", **FAST) as base:
        yield base


@pytest.fixture
def test_client(runtime: Runtime) -> tuple[str, str]:
    """A test-mode L2 client: (client_id, api_key)."""
    out = run_cli(
        runtime.settings, "clients", "create", "--name", "sdk", "--mode", "test", "--level", "L2"
    )
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    return str(created["client_id"]), str(created["api_key"])


def test_full_flow_with_the_sync_client(service: str, test_client: tuple[str, str]) -> None:
    """Sync client: verify by SMS, get a token, check it offline, introspect, revoke, erase."""
    client_id, api_key = test_client
    with RealnameClient(service, api_key, timeout=30) as client:
        v = client.create_verification(**PERSON)
        v = client.wait_for_status(v.id, timeout=20)
        assert v.status == "awaiting_code"
        with pytest.raises(NotVerified) as refused:
            client.issue_token(v.id)
        assert refused.value.missing_checks == ("sms_otp",)

        v = client.submit_code(v.id, client.wait_for_sandbox_code(v.id))
        assert v.status == "verified"
        token = client.issue_token(v.id)
        assert (token.token_type, token.verification_id, token.level) == ("Bearer", v.id, "L2")

        verifier = TokenVerifier(f"{service}/.well-known/jwks.json", audience=client_id)
        claims = verifier.verify(token.access_token)
        assert (claims.aud, claims.client_id, claims.verification_id) == (
            client_id,
            client_id,
            v.id,
        )
        assert (claims.level, claims.adult) == ("L2", True)

        active = client.introspect(token.access_token)
        assert active.active
        assert (active.sub, active.jti) == (claims.sub, claims.jti)
        client.revoke(token.access_token)
        assert not client.introspect(token.access_token).active

        erased = client.erase(v.id)
        assert erased.status == "erased"
        assert erased.erasure is not None
        assert client.get_verification(v.id).status == "erased"


async def test_full_flow_with_the_async_client(service: str, test_client: tuple[str, str]) -> None:
    """Async client: the same flow; erasure also makes the person's other tokens inactive."""
    client_id, api_key = test_client
    async with AsyncRealnameClient(service, api_key, timeout=30) as client:
        v = await client.create_verification(**PERSON)
        v = await client.wait_for_status(v.id, timeout=20)
        assert v.status == "awaiting_code"
        v = await client.submit_code(v.id, await client.wait_for_sandbox_code(v.id))
        assert v.status == "verified"
        token = await client.issue_token(v.id)
        kept = await client.issue_token(v.id)

        verifier = TokenVerifier(f"{service}/.well-known/jwks.json", audience=client_id)
        claims = await verifier.averify(token.access_token)
        assert (claims.verification_id, claims.level) == (v.id, "L2")

        assert (await client.introspect(token.access_token)).active
        await client.revoke(token.access_token)
        assert not (await client.introspect(token.access_token)).active
        assert (await client.introspect(kept.access_token)).active

        erased = await client.erase(v.id)
        assert erased.status == "erased"
        assert erased.erasure is not None
        assert not (await client.introspect(kept.access_token)).active


async def test_repeated_create_with_one_key_returns_one_verification(
    service: str, test_client: tuple[str, str]
) -> None:
    """The service answers a repeated create with the same Idempotency-Key with the first one."""
    _, api_key = test_client
    async with AsyncRealnameClient(service, api_key, timeout=30) as client:
        first = await client.create_verification(**PERSON, idempotency_key="sdk-signup-1")
        again = await client.create_verification(**PERSON, idempotency_key="sdk-signup-1")

    assert first.id == again.id


async def test_fastapi_dependency_sees_a_revocation_at_once(
    service: str, test_client: tuple[str, str]
) -> None:
    """A backend guarded by require_verified(introspect_with=...) refuses a revoked token."""
    client_id, api_key = test_client
    async with AsyncRealnameClient(service, api_key, timeout=30) as client:
        v = await client.create_verification(**PERSON)
        await client.wait_for_status(v.id, timeout=20)
        await client.submit_code(v.id, await client.wait_for_sandbox_code(v.id))
        token = (await client.issue_token(v.id)).access_token

        verifier = TokenVerifier(f"{service}/.well-known/jwks.json", audience=client_id)
        person = require_verified(verifier, level="L2", adult=True, introspect_with=client)
        app = FastAPI()
        install_problem_handler(app)

        @app.get("/me")
        async def me(claims: Annotated[Claims, Depends(person)]) -> dict[str, Any]:
            return {"sub": claims.sub}

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://backend"
        ) as backend:
            headers = {"Authorization": f"Bearer {token}"}
            before = await backend.get("/me", headers=headers)
            await client.revoke(token)
            after = await backend.get("/me", headers=headers)

    assert before.status_code == 200
    assert (after.status_code, after.json()["reason"]) == (401, "inactive")


def test_revoking_an_unknown_token_succeeds(service: str, test_client: tuple[str, str]) -> None:
    """RFC 7009: revoking a token the service never issued is still a success."""
    _, api_key = test_client
    with RealnameClient(service, api_key) as client:
        client.revoke("not-a-token-the-service-issued")


def test_introspecting_a_malformed_token_is_inactive(
    service: str, test_client: tuple[str, str]
) -> None:
    """RFC 7662: a malformed token introspects as inactive, not as an error."""
    _, api_key = test_client
    with RealnameClient(service, api_key) as client:
        result = client.introspect("not.a.token")

    assert not result.active


def test_package_docstring_example_runs(service: str, test_client: tuple[str, str]) -> None:
    """The example in realname_sdk's module docstring runs as written against the service."""
    client_id, api_key = test_client
    doc = realname_sdk.__doc__ or ""
    block = doc.split("::\n", 1)[1]
    source = textwrap.dedent(block.split('\n"""', 1)[0])
    source = (
        source.replace("http://127.0.0.1:8000", service)
        .replace('"rn_test_..."', repr(api_key))
        .replace('"cli_..."', repr(client_id))
    )
    namespace: dict[str, Any] = {}

    exec(compile(source, "realname_sdk.__doc__", "exec"), namespace)  # noqa: S102 (our own docs)

    assert namespace["claims"].level == "L2"
