"""require_verified on a tiny FastAPI backend, driven through httpx.ASGITransport."""

# No ``from __future__ import annotations``: FastAPI resolves the route's annotations at runtime,
# and the dependency in them is a local variable.

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from realname_sdk import AsyncRealnameClient, Claims, TokenVerifier
from realname_sdk.fastapi import PROBLEM_JSON, install_problem_handler, require_verified
from realname_sdk.testing import FakeIssuer

AUDIENCE = "cli_backend"


@pytest.fixture
def issuer() -> FakeIssuer:
    return FakeIssuer(audience=AUDIENCE)


def verifier_for(issuer: FakeIssuer) -> TokenVerifier:
    http = httpx.AsyncClient(transport=issuer.transport())
    return TokenVerifier(issuer.jwks_url, audience=AUDIENCE, http_client=http)


def introspector(active: bool | None) -> AsyncRealnameClient:
    """A client whose introspection answers active/inactive, or fails (None)."""

    def handle(request: httpx.Request) -> httpx.Response:
        if active is None:
            return httpx.Response(500, text="down")
        return httpx.Response(200, json={"active": active})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return AsyncRealnameClient(
        "https://realname.test", "rn_test_k", http_client=http, max_retries=0
    )


def backend(verifier: TokenVerifier, *, problems: bool = True, **requirement: Any) -> FastAPI:
    app = FastAPI()
    if problems:
        install_problem_handler(app)
    person = require_verified(verifier, **requirement)

    @app.get("/protected")
    async def protected(claims: Annotated[Claims, Depends(person)]) -> dict[str, Any]:
        return {"sub": claims.sub, "level": claims.level, "adult": claims.adult}

    return app


async def call(app: FastAPI, token: str | None = None, scheme: str = "Bearer") -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://backend"
    ) as client:
        return await client.get("/protected", headers=headers)


async def test_valid_token_reaches_the_route_with_its_claims(issuer: FakeIssuer) -> None:
    """A valid L2 token on an L2 route gets 200 and the route sees its claims."""
    app = backend(verifier_for(issuer), level="L2")

    r = await call(app, issuer.mint(sub="sub_7", level="L2"))

    assert r.status_code == 200
    assert r.json() == {"sub": "sub_7", "level": "L2", "adult": True}


async def test_higher_level_satisfies_a_lower_requirement(issuer: FakeIssuer) -> None:
    """An L3 token is admitted to an L2 route."""
    r = await call(backend(verifier_for(issuer), level="L2"), issuer.mint(level="L3"))

    assert r.status_code == 200


async def test_missing_token_is_401_with_a_bearer_challenge(issuer: FakeIssuer) -> None:
    """No Authorization header: 401 token_required, WWW-Authenticate: Bearer, problem+json."""
    r = await call(backend(verifier_for(issuer)))

    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert r.headers["Content-Type"] == PROBLEM_JSON
    assert r.json()["code"] == "token_required"


async def test_non_bearer_scheme_is_treated_as_missing(issuer: FakeIssuer) -> None:
    """Basic credentials are not a service token: 401 token_required."""
    r = await call(backend(verifier_for(issuer)), "dXNlcjpwYXNz", scheme="Basic")

    assert (r.status_code, r.json()["code"]) == (401, "token_required")


async def test_invalid_token_is_401_invalid_token(issuer: FakeIssuer) -> None:
    """A token that does not verify: 401 with error="invalid_token" and the reason."""
    r = await call(backend(verifier_for(issuer)), "not.a.token")

    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert r.headers["Content-Type"] == PROBLEM_JSON
    assert (r.json()["code"], r.json()["reason"]) == ("invalid_token", "malformed")


async def test_expired_token_is_401_with_reason_expired(issuer: FakeIssuer) -> None:
    """An expired token is refused with reason expired (so clients know to get a new one)."""
    token = issuer.mint(now=1_700_000_000)

    r = await call(backend(verifier_for(issuer)), token)

    assert (r.status_code, r.json()["reason"]) == (401, "expired")


async def test_token_of_another_client_is_401(issuer: FakeIssuer) -> None:
    """A token issued to another client is refused as wrong_audience."""
    r = await call(backend(verifier_for(issuer)), issuer.mint(aud="cli_other"))

    assert (r.status_code, r.json()["reason"]) == (401, "wrong_audience")


async def test_low_level_is_403_insufficient_level(issuer: FakeIssuer) -> None:
    """An L1 token on an L2 route: 403 insufficient_level as problem+json."""
    r = await call(backend(verifier_for(issuer), level="L2"), issuer.mint(level="L1"))

    assert r.status_code == 403
    assert r.headers["Content-Type"] == PROBLEM_JSON
    assert r.json()["code"] == "insufficient_level"
    assert r.json()["required_level"] == "L2"


async def test_minor_on_an_adult_route_is_403_adult_required(issuer: FakeIssuer) -> None:
    """A minor's token on a route requiring adults: 403 adult_required."""
    r = await call(backend(verifier_for(issuer), adult=True), issuer.mint(adult=False))

    assert (r.status_code, r.json()["code"]) == (403, "adult_required")


async def test_unstated_adulthood_does_not_pass_an_adult_route(issuer: FakeIssuer) -> None:
    """A token that does not state adulthood is refused where adults are required."""
    r = await call(backend(verifier_for(issuer), adult=True), issuer.mint(adult=None))

    assert (r.status_code, r.json()["code"]) == (403, "adult_required")


async def test_adult_on_a_minors_route_is_403_minor_required(issuer: FakeIssuer) -> None:
    """adult=False admits only minors."""
    r = await call(backend(verifier_for(issuer), adult=False), issuer.mint(adult=True))

    assert (r.status_code, r.json()["code"]) == (403, "minor_required")


async def test_revoked_token_is_401_when_introspecting(issuer: FakeIssuer) -> None:
    """With introspect_with, a token the service calls inactive is refused at once."""
    app = backend(verifier_for(issuer), introspect_with=introspector(active=False))

    r = await call(app, issuer.mint())

    assert (r.status_code, r.json()["reason"]) == (401, "inactive")


async def test_active_token_passes_introspection(issuer: FakeIssuer) -> None:
    """With introspect_with, an active token is admitted."""
    app = backend(verifier_for(issuer), introspect_with=introspector(active=True))

    r = await call(app, issuer.mint())

    assert r.status_code == 200


async def test_introspection_outage_fails_closed(issuer: FakeIssuer) -> None:
    """If introspection cannot be reached the request is refused with 503, never admitted."""
    app = backend(verifier_for(issuer), introspect_with=introspector(active=None))

    r = await call(app, issuer.mint())

    assert (r.status_code, r.json()["code"]) == (503, "token_check_unavailable")


async def test_jwks_outage_is_503_not_401(issuer: FakeIssuer) -> None:
    """When no signing keys can be fetched the answer is 503 (an outage, not a bad token)."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    verifier = TokenVerifier(issuer.jwks_url, audience=AUDIENCE, http_client=http)

    r = await call(backend(verifier), issuer.mint())

    assert r.status_code == 503


async def test_without_the_problem_handler_status_and_challenge_stay(issuer: FakeIssuer) -> None:
    """Without install_problem_handler, refusals keep their status and WWW-Authenticate."""
    r = await call(backend(verifier_for(issuer), problems=False), "not.a.token")

    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')


def test_unknown_level_is_refused_at_definition(issuer: FakeIssuer) -> None:
    """require_verified with a level that does not exist raises ValueError at import time."""
    with pytest.raises(ValueError, match="unknown level"):
        require_verified(verifier_for(issuer), level="L5")
