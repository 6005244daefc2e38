"""TokenVerifier against locally generated Ed25519 keys served from a MockTransport JWKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from realname_sdk import InvalidToken, KeySetUnavailable, TokenVerifier, level_at_least
from realname_sdk.testing import FakeIssuer
from realname_sdk.tokens import Claims, parse_jwks

AUDIENCE = "cli_test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def craft(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )


def verifier_for(issuer: FakeIssuer, **kwargs: Any) -> TokenVerifier:
    http = httpx.Client(transport=issuer.transport())
    return TokenVerifier(issuer.jwks_url, audience=AUDIENCE, http_client=http, **kwargs)


def async_verifier_for(issuer: FakeIssuer, **kwargs: Any) -> TokenVerifier:
    http = httpx.AsyncClient(transport=issuer.transport())
    return TokenVerifier(issuer.jwks_url, audience=AUDIENCE, http_client=http, **kwargs)


def reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    return caught.value.reason


@pytest.fixture
def issuer() -> FakeIssuer:
    return FakeIssuer(audience=AUDIENCE)


def test_fresh_token_is_accepted(issuer: FakeIssuer) -> None:
    """A fresh token signed with a published key verifies and maps its claims."""
    token = issuer.mint(sub="sub_1", level="L2", adult=True, vid="ver_9")

    claims = verifier_for(issuer).verify(token)

    assert (claims.sub, claims.aud, claims.iss, claims.level, claims.adult) == (
        "sub_1",
        AUDIENCE,
        "https://realname.test",
        "L2",
        True,
    )
    assert (claims.verification_id, claims.client_id) == ("ver_9", AUDIENCE)


async def test_fresh_token_is_accepted_by_averify(issuer: FakeIssuer) -> None:
    """averify accepts a fresh token using an AsyncClient for the JWKS."""
    claims = await async_verifier_for(issuer).averify(issuer.mint(level="L3"))

    assert claims.level == "L3"


async def test_averify_works_with_a_sync_http_client(issuer: FakeIssuer) -> None:
    """averify can fetch the JWKS through a sync httpx.Client (from a worker thread)."""
    claims = await verifier_for(issuer).averify(issuer.mint())

    assert claims.aud == AUDIENCE


def test_verify_refuses_an_async_http_client(issuer: FakeIssuer) -> None:
    """verify on a verifier built with an AsyncClient raises TypeError rather than block."""
    with pytest.raises(TypeError):
        async_verifier_for(issuer).verify(issuer.mint())


def test_expired_token_is_rejected(issuer: FakeIssuer) -> None:
    """A token past exp (beyond the leeway) is rejected as expired."""
    token = issuer.mint(now=int(time.time()) - 1000, ttl=900)

    assert reason(verifier_for(issuer, leeway=30), token) == "expired"


def test_leeway_tolerates_small_clock_skew(issuer: FakeIssuer) -> None:
    """A token that expired less than leeway seconds ago is still accepted."""
    token = issuer.mint(now=int(time.time()) - 910, ttl=900)

    assert verifier_for(issuer, leeway=30).verify(token).sub


def test_token_from_the_future_is_rejected(issuer: FakeIssuer) -> None:
    """A token whose iat/nbf lies beyond the leeway is rejected as not_yet_valid."""
    token = issuer.mint(now=int(time.time()) + 3600)

    assert reason(verifier_for(issuer), token) == "not_yet_valid"


def test_wrong_audience_is_rejected(issuer: FakeIssuer) -> None:
    """A token issued to another client is rejected as wrong_audience."""
    token = issuer.mint(aud="cli_someone_else")

    assert reason(verifier_for(issuer), token) == "wrong_audience"


def test_former_issuer_with_plain_jwt_typ_is_accepted(issuer: FakeIssuer) -> None:
    """A token signed before RFC 9068 (iss urn:realname, typ JWT) verifies until it expires."""
    token = issuer.mint(iss="urn:realname", headers={"typ": "JWT"})

    assert verifier_for(issuer).verify(token).iss == "urn:realname"


def test_verifier_from_metadata_uses_its_issuer_and_jwks_uri(issuer: FakeIssuer) -> None:
    """TokenVerifier.from_metadata reads jwks_uri and issuer from RFC 8414 metadata."""
    jwks = issuer.transport()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": issuer.issuer, "jwks_uri": issuer.jwks_url})
        return jwks.handle_request(request)

    http = httpx.Client(transport=httpx.MockTransport(handle))
    verifier = TokenVerifier.from_metadata(issuer.issuer, audience=AUDIENCE, http_client=http)

    assert (verifier.jwks_url, verifier.issuer) == (issuer.jwks_url, issuer.issuer)
    assert verifier.verify(issuer.mint(sub="sub_m")).sub == "sub_m"


def test_wrong_issuer_is_rejected(issuer: FakeIssuer) -> None:
    """A token from another issuer is rejected as wrong_issuer."""
    token = issuer.mint(iss="urn:elsewhere")

    assert reason(verifier_for(issuer), token) == "wrong_issuer"


def test_tampered_payload_is_rejected(issuer: FakeIssuer) -> None:
    """Raising lvl in the payload of a signed token breaks its signature."""
    header, payload, signature = issuer.mint(level="L1").split(".")
    claims = json.loads(unb64(payload))
    forged = b64(json.dumps({**claims, "lvl": "L3"}).encode())

    assert reason(verifier_for(issuer), f"{header}.{forged}.{signature}") == "bad_signature"


def test_tampered_signature_is_rejected(issuer: FakeIssuer) -> None:
    """A token with one signature byte flipped is rejected as bad_signature."""
    header, payload, signature = issuer.mint().split(".")
    raw = bytearray(unb64(signature))
    raw[0] ^= 0x01

    assert reason(verifier_for(issuer), f"{header}.{payload}.{b64(bytes(raw))}") == "bad_signature"


def test_token_signed_by_another_key_under_a_known_kid_is_rejected(issuer: FakeIssuer) -> None:
    """A token naming a published kid but signed by a different key fails its signature."""
    impostor = FakeIssuer(audience=AUDIENCE)
    token = jwt.encode(
        issuer.claims(),
        impostor.private_key(),
        algorithm="EdDSA",
        headers={"kid": issuer.current_kid},
    )

    assert reason(verifier_for(issuer), token) == "bad_signature"


def test_alg_none_is_rejected(issuer: FakeIssuer) -> None:
    """An unsigned token ({"alg": "none"}, empty signature) is rejected as bad_algorithm."""
    token = craft({"alg": "none"}, issuer.claims())

    assert reason(verifier_for(issuer), token) == "bad_algorithm"


def test_alg_none_with_a_known_kid_is_rejected(issuer: FakeIssuer) -> None:
    """alg none is rejected even when the header names a published kid."""
    token = craft({"alg": "none", "typ": "JWT", "kid": issuer.current_kid}, issuer.claims())

    assert reason(verifier_for(issuer), token) == "bad_algorithm"


@pytest.mark.parametrize("encoding", ["raw", "pem"])
def test_hs256_signed_with_the_public_key_is_rejected(issuer: FakeIssuer, encoding: str) -> None:
    """HS256 using the published public key as the HMAC secret is rejected as bad_algorithm."""
    public = issuer.private_key().public_key()
    secret = (
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if encoding == "raw"
        else public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.current_kid}
    signing_input = ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(issuer.claims()).encode())]
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

    assert reason(verifier_for(issuer), f"{signing_input}.{b64(mac)}") == "bad_algorithm"


def test_rs256_is_rejected(issuer: FakeIssuer) -> None:
    """A token signed with RS256 is rejected as bad_algorithm."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        issuer.claims(), rsa_key, algorithm="RS256", headers={"kid": issuer.current_kid}
    )

    assert reason(verifier_for(issuer), token) == "bad_algorithm"


def test_unknown_kid_is_rejected(issuer: FakeIssuer) -> None:
    """A token signed with a key that is not in the JWKS is rejected as unknown_key."""
    hidden = issuer.rotate(publish=False)

    assert reason(verifier_for(issuer), issuer.mint(kid=hidden)) == "unknown_key"


def test_missing_kid_is_rejected(issuer: FakeIssuer) -> None:
    """A token without a kid header is rejected as unknown_key."""
    token = jwt.encode(issuer.claims(), issuer.private_key(), algorithm="EdDSA")

    assert reason(verifier_for(issuer), token) == "unknown_key"


@pytest.mark.parametrize("claim", ["exp", "iat", "aud", "iss", "sub", "jti", "lvl"])
def test_missing_required_claim_is_rejected(issuer: FakeIssuer, claim: str) -> None:
    """A token lacking any required claim is rejected as missing_claim."""
    token = issuer.mint(omit=[claim])

    assert reason(verifier_for(issuer), token) == "missing_claim"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "eyJhbGciOiJFZERTQSJ9.%%%.xx"])
def test_malformed_token_is_rejected(issuer: FakeIssuer, token: str) -> None:
    """Something that is not a compact JWS is rejected as malformed."""
    assert reason(verifier_for(issuer), token) == "malformed"


def test_foreign_typ_is_rejected(issuer: FakeIssuer) -> None:
    """A token whose typ header is not at+jwt (another kind of signed object) is malformed."""
    token = issuer.mint(headers={"typ": "logout+jwt"})

    assert reason(verifier_for(issuer), token) == "malformed"


def test_rotation_refreshes_the_jwks_once_and_accepts(issuer: FakeIssuer) -> None:
    """A token with a newly published kid triggers one JWKS refresh and is accepted."""
    verifier = verifier_for(issuer, min_refresh_interval=0)
    verifier.verify(issuer.mint())
    issuer.rotate()

    claims = verifier.verify(issuer.mint())

    assert claims.sub
    assert issuer.jwks_fetches == 2


def test_previous_key_stays_valid_after_rotation(issuer: FakeIssuer) -> None:
    """A token signed before a rotation still verifies while its key stays published."""
    old_token = issuer.mint()
    verifier = verifier_for(issuer, min_refresh_interval=0)
    issuer.rotate()
    verifier.verify(issuer.mint())

    assert verifier.verify(old_token).sub


def test_known_kid_does_not_refetch(issuer: FakeIssuer) -> None:
    """Verifying many tokens signed with a cached key fetches the JWKS once."""
    verifier = verifier_for(issuer)

    for _ in range(20):
        verifier.verify(issuer.mint())

    assert issuer.jwks_fetches == 1


def test_unknown_kids_cannot_cause_a_refetch_storm(issuer: FakeIssuer) -> None:
    """Many tokens with unknown kids cause at most one refresh per min_refresh_interval."""
    verifier = verifier_for(issuer, min_refresh_interval=0.2)
    verifier.verify(issuer.mint())
    time.sleep(0.25)
    hidden = [issuer.rotate(publish=False) for _ in range(10)]

    reasons = {reason(verifier, issuer.mint(kid=kid)) for kid in hidden}

    assert reasons == {"unknown_key"}
    assert issuer.jwks_fetches == 2


def test_refresh_is_allowed_again_after_min_refresh_interval(issuer: FakeIssuer) -> None:
    """Once min_refresh_interval has passed, an unknown kid may trigger another refresh."""
    verifier = verifier_for(issuer, min_refresh_interval=0.05)
    verifier.verify(issuer.mint())
    issuer.rotate()
    time.sleep(0.06)

    assert verifier.verify(issuer.mint()).sub
    assert issuer.jwks_fetches == 2


def test_key_published_inside_the_interval_waits_for_it(issuer: FakeIssuer) -> None:
    """A key published right after a fetch is only picked up once the interval has passed."""
    verifier = verifier_for(issuer, min_refresh_interval=10)
    verifier.verify(issuer.mint())
    issuer.rotate()

    assert reason(verifier, issuer.mint()) == "unknown_key"


async def test_concurrent_unknown_kid_fetches_collapse_into_one(issuer: FakeIssuer) -> None:
    """Twenty concurrent averify calls on a cold cache fetch the JWKS once."""
    verifier = async_verifier_for(issuer)
    tokens = [issuer.mint() for _ in range(20)]

    results = await asyncio.gather(*(verifier.averify(t) for t in tokens))

    assert len(results) == 20
    assert issuer.jwks_fetches == 1


def test_cache_ttl_expiry_refetches(issuer: FakeIssuer) -> None:
    """After cache_ttl the JWKS is fetched again, even for a known kid."""
    verifier = verifier_for(issuer, cache_ttl=0.05, min_refresh_interval=0)
    verifier.verify(issuer.mint())
    time.sleep(0.06)

    verifier.verify(issuer.mint())

    assert issuer.jwks_fetches == 2


def test_unreachable_jwks_raises_key_set_unavailable(issuer: FakeIssuer) -> None:
    """With no key ever fetched, an unreachable JWKS raises KeySetUnavailable, not InvalidToken."""
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    verifier = TokenVerifier(issuer.jwks_url, audience=AUDIENCE, http_client=http)

    with pytest.raises(KeySetUnavailable):
        verifier.verify(issuer.mint())


def test_cached_keys_survive_a_failed_refresh(issuer: FakeIssuer) -> None:
    """When a scheduled refresh fails, the keys already cached stay in use."""
    up = {"value": True}
    served = issuer.transport()

    def flaky(request: httpx.Request) -> httpx.Response:
        return served.handle_request(request) if up["value"] else httpx.Response(500)

    http = httpx.Client(transport=httpx.MockTransport(flaky))
    verifier = TokenVerifier(
        issuer.jwks_url, audience=AUDIENCE, http_client=http, cache_ttl=0, min_refresh_interval=0
    )
    verifier.verify(issuer.mint())
    up["value"] = False

    assert verifier.verify(issuer.mint()).sub


def test_jwks_entries_of_other_types_are_ignored(issuer: FakeIssuer) -> None:
    """parse_jwks keeps Ed25519 signing keys and skips oct, RSA and encryption keys."""
    document = issuer.jwks()
    document["keys"] += [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {**document["keys"][0], "kid": "enc", "use": "enc"},
        {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
    ]

    assert set(parse_jwks(document)) == {issuer.current_kid}


def test_level_at_least_orders_levels() -> None:
    """L3 meets L2, L1 does not, and the level itself meets itself."""
    assert level_at_least("L3", "L2")
    assert level_at_least("L2", "L2")
    assert not level_at_least("L1", "L2")


def test_level_at_least_refuses_unknown_token_levels(issuer: FakeIssuer) -> None:
    """A level the SDK does not know never satisfies a requirement."""
    claims = verifier_for(issuer).verify(issuer.mint(level="L9"))

    assert isinstance(claims, Claims)
    assert not level_at_least(claims, "L1")


def test_level_at_least_rejects_an_unknown_minimum() -> None:
    """Asking for a level that does not exist is a programming error."""
    with pytest.raises(ValueError, match="unknown level"):
        level_at_least("L2", "L4")
