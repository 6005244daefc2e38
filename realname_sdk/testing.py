"""Test doubles for backends that accept service tokens and webhooks.

:class:`FakeIssuer` signs tokens the way the service does (EdDSA, same header and claims) with
keys it generates, and serves its JWKS through an :class:`httpx.MockTransport`, so a backend's
tests can exercise :class:`~realname_sdk.TokenVerifier` and
:func:`~realname_sdk.fastapi.require_verified` without running the service::

    issuer = FakeIssuer(audience="cli_test")
    verifier = TokenVerifier(
        issuer.jwks_url,
        audience="cli_test",
        http_client=httpx.AsyncClient(transport=issuer.transport()),
    )
    token = issuer.mint(level="L2", adult=True)

:class:`FakeWebhookSender` signs webhook deliveries with a ``whsec_`` secret the way the
service does, for tests of a receiver (see :mod:`realname_sdk.webhooks`).

Never use them outside tests: anyone holding a :class:`FakeIssuer` can mint tokens for its keys.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from realname_sdk import webhooks

__all__ = ["FakeIssuer", "FakeWebhookSender", "SignedDelivery"]


class FakeIssuer:
    """Mints service tokens and serves the matching JWKS, for tests.

    Args:
        issuer: The ``iss`` claim (default: ``jwks_url`` without ``/.well-known/jwks.json``, what
            the service and :class:`~realname_sdk.TokenVerifier` use).
        audience: The ``aud`` and ``client_id`` claims: the client id the tokens are issued to.
        jwks_url: Where :meth:`transport` answers with the JWKS.

    Attributes:
        jwks_fetches: How many times the JWKS has been served.
        current_kid: The ``kid`` of the key :meth:`mint` signs with by default.
    """

    def __init__(
        self,
        *,
        issuer: str | None = None,
        audience: str = "cli_test",
        jwks_url: str = "https://realname.test/.well-known/jwks.json",
    ) -> None:
        self.issuer = issuer or jwks_url.removesuffix("/.well-known/jwks.json")
        self.audience = audience
        self.jwks_url = jwks_url
        self.jwks_fetches = 0
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self._published: list[str] = []
        self.current_kid = self.rotate()

    def rotate(self, *, publish: bool = True) -> str:
        """Make a new signing key the current one (older keys stay published); return its kid.

        With ``publish=False`` the key signs but is not in the JWKS (an unknown key).
        """
        kid = f"test-{uuid.uuid4().hex[:12]}"
        self._keys[kid] = Ed25519PrivateKey.generate()
        if publish:
            self._published.append(kid)
        self.current_kid = kid
        return kid

    def publish(self, kid: str) -> None:
        """Add a key made with ``rotate(publish=False)`` to the JWKS."""
        if kid not in self._published:
            self._published.append(kid)

    def private_key(self, kid: str | None = None) -> Ed25519PrivateKey:
        """The private key behind ``kid`` (default: the current key)."""
        return self._keys[kid or self.current_kid]

    def jwks(self) -> dict[str, Any]:
        """The JWKS document, newest key first, as the service publishes it."""
        keys = []
        for kid in reversed(self._published):
            public = json.loads(OKPAlgorithm.to_jwk(self._keys[kid].public_key()))
            keys.append({**public, "kid": kid, "alg": "EdDSA", "use": "sig"})
        return {"keys": keys}

    def claims(
        self,
        *,
        sub: str = "sub_test_person",
        level: str = "L2",
        adult: bool | None = True,
        ttl: int = 900,
        now: int | None = None,
        omit: Iterable[str] = (),
        **extra: Any,
    ) -> dict[str, Any]:
        """The claims :meth:`mint` signs: the service's claim set, with overrides.

        ``extra`` replaces or adds claims (e.g. ``aud="cli_other"``); ``omit`` drops claims.
        """
        issued = int(time.time()) if now is None else now
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl,
            "jti": uuid.uuid4().hex,
            "vid": "ver_test",
            "lvl": level,
            "adult": adult,
            "client_id": self.audience,
        }
        if adult is None:
            del claims["adult"]
        claims.update(extra)
        for name in omit:
            claims.pop(name, None)
        return claims

    def mint(
        self, *, kid: str | None = None, headers: Mapping[str, Any] | None = None, **claims: Any
    ) -> str:
        """A signed service token; ``claims`` are passed to :meth:`claims`."""
        key_id = kid or self.current_kid
        return jwt.encode(
            self.claims(**claims),
            self._keys[key_id],
            algorithm="EdDSA",
            headers={"kid": key_id, "typ": "at+jwt", **(headers or {})},
        )

    def transport(self) -> httpx.MockTransport:
        """A transport answering ``GET`` of :attr:`jwks_url` with the current JWKS (404 else)."""

        def handle(request: httpx.Request) -> httpx.Response:
            if request.method == "GET" and str(request.url) == self.jwks_url:
                self.jwks_fetches += 1
                return httpx.Response(200, json=self.jwks())
            return httpx.Response(404)

        return httpx.MockTransport(handle)


@dataclass(frozen=True)
class SignedDelivery:
    """A webhook delivery as the service would send it: the exact body and its headers."""

    body: bytes
    headers: dict[str, str]


class FakeWebhookSender:
    """Signs webhook deliveries the way the service does (Standard Webhooks, ``whsec_``
    secrets), so a receiver's tests can post genuine-looking events to it::

        sender = FakeWebhookSender()           # or FakeWebhookSender(secret="whsec_...")
        delivery = sender.delivery("verification.verified", verification_id="ver_1",
                                   external_user_id="user-1", status="verified", level="L2")
        client.post("/hooks/realname", content=delivery.body, headers=delivery.headers)

    Attributes:
        secret: The ``whsec_…`` secret to configure the receiver with.
    """

    def __init__(self, secret: str | None = None, *, livemode: bool = False) -> None:
        self.secret = secret or webhooks.new_secret()
        self.livemode = livemode

    def event(self, type: str, *, event_id: str | None = None, **data: Any) -> dict[str, Any]:
        """An event object; ``data`` fills ``verification_id``, ``external_user_id``,
        ``status``, ``reason``, ``level`` (and ``jti`` for ``token.revoked``)."""
        body: dict[str, Any] = {
            "verification_id": None,
            "external_user_id": None,
            "status": None,
            "reason": None,
            "level": None,
        }
        body.update(data)
        return {
            "id": event_id or f"evt_{uuid.uuid4().hex}",
            "type": type,
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "livemode": self.livemode,
            "data": body,
        }

    def delivery(
        self,
        type: str = "ping",
        *,
        event_id: str | None = None,
        timestamp: int | None = None,
        **data: Any,
    ) -> SignedDelivery:
        """A signed delivery of a new event (``timestamp`` overrides the signing time)."""
        event = self.event(type, event_id=event_id, **data)
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        return SignedDelivery(
            body, webhooks.sign(event["id"], body, self.secret, timestamp=timestamp)
        )
