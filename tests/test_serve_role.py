"""`realname serve --role tokens` (``REALNAME_SERVE_ROLE``): processes of the token path's own.

A ``tokens`` app answers introspection, revocation, the JWKS and discovery documents, health
and metrics, and 404 problem+json everywhere else; it runs no worker and keeps no argon2 pool.
That revocations reach such a process at once, across processes, is proved in
``tests/test_scale_out.py`` (real `realname serve` processes on PostgreSQL and Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from pydantic import ValidationError

from app.cli import build_parser
from app.main import create_app
from app.runtime import Runtime
from app.settings import ServeRole, Settings
from app.worker import Worker
from tests.conftest import TEST_BLIND_KEYS, TEST_SECRET, auth
from tests.test_tokens import introspect, token_for, verified

#: Everything a ``tokens`` process routes, and nothing more.
TOKEN_PATH = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/v1/tokens/introspect"),
    ("POST", "/v1/tokens/revoke"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/oauth-authorization-server"),
}


def routed(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every route of ``app``, included routers unfolded (``*``
    for a route that takes any method, as a mount does)."""
    out: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path or str(getattr(route, "path", ""))
        out |= {(method, path) for method in getattr(route, "methods", None) or {"*"}}
    return out


@pytest.fixture
async def tokens_http(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A ``tokens`` app on the suite's runtime, over httpx's ASGI transport."""
    application = create_app(runtime=runtime, role="tokens")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://testserver"
    ) as client:
        yield client


def test_serve_takes_a_role_of_all_or_tokens() -> None:
    """`serve --role tokens|all` parses; no --role leaves it to the setting; others exit 2."""
    parser = build_parser()

    assert parser.parse_args(["serve", "--role", "tokens"]).role == "tokens"
    assert parser.parse_args(["serve", "--role", "all"]).role == "all"
    assert parser.parse_args(["serve"]).role is None
    with pytest.raises(SystemExit) as refused:
        parser.parse_args(["serve", "--role", "admin"])
    assert refused.value.code == 2


def test_the_role_setting_defaults_to_all_and_refuses_an_unknown_role(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REALNAME_SERVE_ROLE is `all` when unset, `tokens` when so set, and nothing else."""

    def from_environment() -> Settings:
        return Settings(
            env="test",
            database_url="sqlite://",
            secret_key=TEST_SECRET,
            blind_index_keys=TEST_BLIND_KEYS,
            _env_file=None,
        )

    monkeypatch.delenv("REALNAME_SERVE_ROLE", raising=False)
    assert from_environment().serve_role == "all"
    monkeypatch.setenv("REALNAME_SERVE_ROLE", "tokens")
    assert from_environment().serve_role == "tokens"
    monkeypatch.setenv("REALNAME_SERVE_ROLE", "admin")
    with pytest.raises(ValidationError):
        from_environment()


def test_a_tokens_app_routes_exactly_the_token_path(settings: Settings) -> None:
    """The tokens role (by argument or by setting) routes the token path and nothing else;
    the whole API routes all of it too."""
    by_setting = create_app(settings.model_copy(update={"serve_role": "tokens"}))
    whole = routed(create_app(settings))

    assert routed(create_app(settings, role="tokens")) == TOKEN_PATH
    assert routed(by_setting) == TOKEN_PATH
    assert whole > TOKEN_PATH
    assert ("POST", "/v1/verifications/{verification_id}/tokens") in whole


async def test_the_token_path_answers_on_a_tokens_app(
    http: httpx.AsyncClient,
    tokens_http: httpx.AsyncClient,
    api_key: str,
    worker: Worker,
) -> None:
    """A token issued by the whole API is introspected and revoked through a tokens app (and
    the whole API then finds it inactive); JWKS, discovery, health and metrics answer."""
    v = await verified(http, api_key, worker)
    token = await token_for(http, api_key, v["id"])

    assert (await introspect(tokens_http, api_key, token))["active"] is True
    revoked = await tokens_http.post(
        "/v1/tokens/revoke", data={"token": token}, headers=auth(api_key)
    )
    assert revoked.status_code == 200, revoked.text
    assert await introspect(http, api_key, token) == {"active": False}
    assert await introspect(tokens_http, api_key, token) == {"active": False}
    for path in ("/.well-known/jwks.json", "/.well-known/oauth-authorization-server"):
        assert (await tokens_http.get(path)).status_code == 200, path
    assert (await tokens_http.get("/.well-known/jwks.json")).json()["keys"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await tokens_http.get(path)).status_code == 200, path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/verifications"),
        ("GET", "/v1/verifications/ver_missing"),
        ("POST", "/v1/verifications/ver_missing/tokens"),
        ("POST", "/v1/verifications/ver_missing/sms-code"),
        ("GET", "/v1/sandbox/messages"),
        ("GET", "/v1/events"),
        ("GET", "/v1/policies/current"),
        ("POST", "/v1/admin/sessions"),
        ("GET", "/admin/"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
    ],
)
async def test_a_tokens_app_answers_every_other_path_404_problem(
    tokens_http: httpx.AsyncClient, api_key: str, method: str, path: str
) -> None:
    """Outside the token path a tokens app answers 404 problem+json `not_found`."""
    answer = await tokens_http.request(method, path, json={}, headers=auth(api_key))

    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "not_found"


async def test_a_tokens_process_runs_no_worker_and_no_hash_pool(settings: Settings) -> None:
    """A tokens app building its own runtime (as `serve` does) starts no outbox worker even
    with REALNAME_RUN_WORKER=true, and its argon2 pools are one thread, whatever
    REALNAME_HASH_WORKERS says; the whole API's start a worker and pools of that size."""
    configured = settings.model_copy(update={"run_worker": True, "hash_workers": 4})
    roles: tuple[ServeRole, ...] = ("tokens", "all")
    seen: dict[str, tuple[bool, int, int]] = {}
    for role in roles:
        application = create_app(configured, role=role)
        async with application.router.lifespan_context(application):
            rt: Runtime = application.state.runtime
            seen[role] = (
                rt.worker is not None,
                rt.identity_hasher.workers,
                rt.password_hasher.workers,
            )

    assert seen == {"tokens": (False, 1, 1), "all": (True, 4, 4)}
