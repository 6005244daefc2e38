"""Offline verification of the service tokens (EdDSA-signed JWTs) against the service's JWKS.

A backend receives a service token from its frontend, verifies it with a :class:`TokenVerifier`
(no call to the service per request: the public keys are fetched from
``/.well-known/jwks.json`` and cached) and reads the person's verification level and adulthood
from the resulting :class:`Claims`::

    verifier = TokenVerifier(
        "https://realname.example.com/.well-known/jwks.json", audience="cli_123"
    )
    claims = verifier.verify(token)  # or: await verifier.averify(token)
    if not level_at_least(claims, "L2"):
        ...

What is checked, and the stable :attr:`InvalidToken.reason` for each failure:

* the header names ``alg: EdDSA`` (nothing else is ever accepted: not ``none``, not HMAC with the
  public key as the secret, not RSA) -- ``bad_algorithm``;
* the header's ``typ``, if present, is ``at+jwt`` (RFC 9068) or, for tokens signed before the
  service followed RFC 9068, ``JWT`` -- ``malformed``;
* the ``kid`` names a key in the JWKS -- ``unknown_key``;
* the Ed25519 signature -- ``bad_signature``;
* ``exp`` (with ``leeway``) -- ``expired``; ``nbf``/``iat`` not in the future -- ``not_yet_valid``;
* ``aud`` is your client id -- ``wrong_audience``; ``iss`` is the service -- ``wrong_issuer``;
* ``exp``, ``iat``, ``aud``, ``iss``, ``sub``, ``jti`` and ``lvl`` are present -- ``missing_claim``;
* anything unreadable -- ``malformed``.

Offline verification cannot see a revocation before the token expires (900 s by default); where
that matters, also ask the service (:meth:`~realname_sdk.AsyncRealnameClient.introspect`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import anyio
import anyio.to_thread
import httpx
import jwt

__all__ = [
    "LEVELS",
    "Claims",
    "InvalidToken",
    "InvalidTokenReason",
    "KeySetUnavailable",
    "TokenVerifier",
    "level_at_least",
]

logger = logging.getLogger("realname_sdk.tokens")

#: The verification levels, weakest first.
LEVELS: tuple[str, ...] = ("L1", "L2", "L3")
_RANK = {level: rank for rank, level in enumerate(LEVELS)}

#: The only signature algorithm a service token may use.
ALGORITHM = "EdDSA"
#: Claims a token must carry (``lvl`` is checked after PyJWT's own checks).
REQUIRED_CLAIMS = ("exp", "iat", "aud", "iss", "sub", "jti")

InvalidTokenReason = Literal[
    "expired",
    "not_yet_valid",
    "bad_signature",
    "wrong_audience",
    "wrong_issuer",
    "bad_algorithm",
    "unknown_key",
    "malformed",
    "missing_claim",
]


class InvalidToken(Exception):
    """The token must not be accepted.

    Attributes:
        reason: A stable code saying why (see the module documentation); safe to log and to
            return to the caller. The token itself is never part of the message.
    """

    def __init__(self, reason: InvalidTokenReason, detail: str = "") -> None:
        self.reason: InvalidTokenReason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class KeySetUnavailable(Exception):
    """The JWKS could not be fetched and no keys are cached, so no token can be checked.

    This is an outage of the service (or of the network to it), not a fault of the token:
    answer 503, not 401.
    """


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims of a service token.

    Attributes:
        sub: A stable, pseudonymous id of the person, the same for every token your client gets
            for that person (and different for other clients). Key your users on this.
        aud: Your client id (the token's audience).
        iss: The issuing service.
        exp: Expiry, seconds since the epoch.
        iat: Issue time, seconds since the epoch.
        jti: The token's unique id (for replay caches, revocation lists, logs).
        verification_id: The verification the token was issued for (``vid``).
        level: The verified level, ``"L1"``, ``"L2"`` or ``"L3"`` (``lvl``).
        adult: Whether the person is an adult (18 or older) now; ``None`` if the token does not
            say. Apply minor protections unless this is ``True``.
        client_id: The client the token was issued to.
        raw: Every claim of the token, including ones this SDK version does not know.
    """

    sub: str
    aud: str
    iss: str
    exp: int
    iat: int
    jti: str
    verification_id: str | None
    level: str
    adult: bool | None
    client_id: str | None
    raw: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )


def level_at_least(claims: Claims | str, minimum: str) -> bool:
    """True when ``claims`` (or a level string) is ``minimum`` or above (``L1`` < ``L2`` < ``L3``).

    An unknown level in the token never passes.

    Raises:
        ValueError: ``minimum`` is not one of :data:`LEVELS`.
    """
    if minimum not in _RANK:
        raise ValueError(f"unknown level {minimum!r}; expected one of {', '.join(LEVELS)}")
    level = claims if isinstance(claims, str) else claims.level
    return _RANK.get(level, -1) >= _RANK[minimum]


# -- the key cache (no I/O) -----------------------------------------------------------------------


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document, by ``kid``.

    Only Ed25519 keys (``kty: OKP``, ``crv: Ed25519``) meant for signatures with ``EdDSA`` are
    kept; other entries are skipped, so a key type added later does not break verification.

    Raises:
        ValueError: the document is not a JWKS (``{"keys": [...]}``).
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not (
            isinstance(entry, Mapping)
            and isinstance(entry.get("kid"), str)
            and entry.get("kty") == "OKP"
            and entry.get("crv") == "Ed25519"
            and entry.get("alg", ALGORITHM) == ALGORITHM
            and entry.get("use", "sig") == "sig"
        ):
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(dict(entry), algorithm=ALGORITHM)
        except jwt.PyJWTError:
            continue
    return keys


class _KeyCache:
    """When to fetch the JWKS, and what it held. Pure state; the verifier does the I/O."""

    def __init__(self, cache_ttl: float, min_refresh_interval: float) -> None:
        self.cache_ttl = cache_ttl
        self.min_refresh_interval = min_refresh_interval
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at: float | None = None
        self.attempted_at: float | None = None

    def should_fetch(self, kid: str, now: float) -> bool:
        """Fetch when nothing is cached, the cache is older than ``cache_ttl``, or ``kid`` is
        unknown -- but never twice within ``min_refresh_interval``."""
        if self.attempted_at is not None and now - self.attempted_at < self.min_refresh_interval:
            return False
        if self.fetched_at is None or now - self.fetched_at >= self.cache_ttl:
            return True
        return kid not in self.keys

    def resolve(self, kid: str) -> jwt.PyJWK:
        key = self.keys.get(kid)
        if key is not None:
            return key
        if self.fetched_at is None:
            raise KeySetUnavailable("the JWKS has not been fetched successfully yet")
        raise InvalidToken("unknown_key", "no key with this kid in the JWKS")


def _kid(token: str) -> str:
    """Read the header without trusting it: the algorithm must be EdDSA and a kid present."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise InvalidToken("malformed", "not a compact JWS")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("malformed", "the header is not readable") from None
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("bad_algorithm", "only EdDSA is accepted")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYPES):
        raise InvalidToken("malformed", "typ is not at+jwt")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("unknown_key", "the header names no kid")
    return kid


#: ``typ`` values of service tokens: RFC 9068's, and plain ``JWT`` of tokens signed before it.
_TYPES = frozenset({"at+jwt", "application/at+jwt", "jwt"})
#: The issuer of tokens signed before the service's issuer became its public URL.
LEGACY_ISSUER = "urn:realname"
_JWKS_PATH = "/.well-known/jwks.json"
_METADATA_PATH = "/.well-known/oauth-authorization-server"


def _decode(
    token: str, key: jwt.PyJWK, *, audience: str, issuer: Sequence[str], leeway: float
) -> Claims:
    try:
        payload = jwt.decode(
            token,
            key=key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("expired", "exp is in the past") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("not_yet_valid", "nbf or iat is in the future") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("wrong_audience", "aud is not this client") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("wrong_issuer", "iss is not the expected issuer") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("bad_signature", "the signature does not verify") from None
    except jwt.InvalidAlgorithmError:
        raise InvalidToken("bad_algorithm", "only EdDSA is accepted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken("missing_claim", f"{exc.claim} is missing") from None
    except jwt.PyJWTError:
        raise InvalidToken("malformed", "the token is not readable") from None
    return _claims(payload, audience)


def _claims(payload: Mapping[str, Any], audience: str) -> Claims:
    level = payload.get("lvl")
    if level is None:
        raise InvalidToken("missing_claim", "lvl is missing")
    if not isinstance(level, str):
        raise InvalidToken("malformed", "lvl is not a string")
    adult = payload.get("adult")
    vid = payload.get("vid")
    client_id = payload.get("client_id")
    return Claims(
        sub=payload["sub"],
        aud=audience,  # PyJWT has checked that aud is (or contains) exactly this value
        iss=payload["iss"],
        exp=int(payload["exp"]),
        iat=int(payload["iat"]),
        jti=payload["jti"],
        verification_id=vid if isinstance(vid, str) else None,
        level=level,
        adult=adult if isinstance(adult, bool) else None,
        client_id=client_id if isinstance(client_id, str) else None,
        raw=MappingProxyType(dict(payload)),
    )


def _document(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json()


# -- the verifier ---------------------------------------------------------------------------------


class TokenVerifier:
    """Verifies service tokens offline, with the service's public keys fetched from its JWKS.

    Args:
        jwks_url: The service's ``/.well-known/jwks.json`` URL.
        audience: Your client id (``cli_…``); tokens issued to other clients are refused.
        issuer: The service's issuer: its public URL (``REALNAME_PUBLIC_URL``, or
            ``REALNAME_TOKEN_ISSUER`` when set). Default: the part of ``jwks_url`` before
            ``/.well-known/jwks.json``. Tokens of the former issuer ``urn:realname`` are
            accepted as well, until they expire.
        leeway: Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        cache_ttl: Seconds the fetched keys are used before the JWKS is fetched again.
        http_client: An ``httpx.Client`` or ``httpx.AsyncClient`` to fetch the JWKS with (the
            caller keeps ownership). A sync client serves :meth:`verify` and, from a worker
            thread, :meth:`averify`; an async client serves :meth:`averify` only. Without one, a
            short-lived client is made for each (rare) fetch.
        min_refresh_interval: The JWKS is fetched at most once in this many seconds, however
            many tokens with unknown ``kid`` arrive (this stops a refetch storm). A token signed
            with a key published within this interval of the last fetch is refused
            (``unknown_key``) until the interval has passed.
        fetch_timeout: Seconds for a JWKS fetch.

    Key rotation: a token whose ``kid`` is not cached triggers one refetch (subject to
    ``min_refresh_interval``); the service keeps the previous key published, so tokens signed
    before a rotation stay valid until they expire. If a fetch fails, the keys already cached stay
    in use and the fetch is tried again after ``min_refresh_interval``; only when no key was ever
    fetched does verification raise :class:`KeySetUnavailable`.

    One instance is safe to share between threads and tasks; concurrent fetches collapse into one.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        audience: str,
        issuer: str | None = None,
        leeway: int = 30,
        cache_ttl: float = 300,
        http_client: httpx.Client | httpx.AsyncClient | None = None,
        min_refresh_interval: float = 10.0,
        fetch_timeout: float = 5.0,
    ) -> None:
        if not jwks_url.startswith(("http://", "https://")):
            raise ValueError("jwks_url must be an http:// or https:// URL")
        if not audience:
            raise ValueError("audience (your client id) must not be empty")
        if leeway < 0 or cache_ttl < 0 or min_refresh_interval < 0:
            raise ValueError("leeway, cache_ttl and min_refresh_interval must not be negative")
        self.jwks_url = jwks_url
        self.audience = audience
        if issuer is None:
            issuer = jwks_url.removesuffix(_JWKS_PATH)
        self.issuer = issuer
        self.leeway = leeway
        self._http = http_client
        self._fetch_timeout = fetch_timeout
        self._cache = _KeyCache(cache_ttl, min_refresh_interval)
        self._thread_lock = threading.Lock()
        self._task_lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"TokenVerifier({self.jwks_url!r}, audience={self.audience!r})"

    @classmethod
    def from_metadata(
        cls,
        service_url: str,
        *,
        audience: str,
        http_client: httpx.Client | None = None,
        fetch_timeout: float = 5.0,
        **options: Any,
    ) -> TokenVerifier:
        """A verifier configured from the service's RFC 8414 metadata
        (``/.well-known/oauth-authorization-server``): its ``jwks_uri`` and ``issuer``.

        Args:
            service_url: The service's base URL (``https://realname.example.com``).
            audience: Your client id.
            http_client: An ``httpx.Client`` for the metadata fetch (and later JWKS fetches).
            fetch_timeout: Seconds for each fetch.
            options: More :class:`TokenVerifier` arguments (``leeway``, ``cache_ttl``, ...).

        Raises:
            httpx.HTTPError: the metadata could not be fetched.
            ValueError: the metadata has no ``issuer`` or ``jwks_uri``.
        """
        url = service_url.rstrip("/") + _METADATA_PATH
        if http_client is not None:
            response = http_client.get(url, timeout=fetch_timeout)
        else:
            with httpx.Client() as http:
                response = http.get(url, timeout=fetch_timeout)
        meta = _document(response)
        if not isinstance(meta, dict):
            raise ValueError("the metadata is not a JSON object")
        issuer, jwks_uri = meta.get("issuer"), meta.get("jwks_uri")
        if not isinstance(issuer, str) or not isinstance(jwks_uri, str):
            raise ValueError("the metadata names no issuer or jwks_uri")
        return cls(
            jwks_uri,
            audience=audience,
            issuer=issuer,
            http_client=http_client,
            fetch_timeout=fetch_timeout,
            **options,
        )

    def verify(self, token: str) -> Claims:
        """Verify a token and return its claims (may fetch the JWKS, blocking).

        Raises:
            InvalidToken: the token must be refused; ``reason`` says why.
            KeySetUnavailable: no keys could be fetched (an outage, not a bad token).
            TypeError: the verifier was built with an ``httpx.AsyncClient``; use :meth:`averify`.
        """
        if isinstance(self._http, httpx.AsyncClient):
            raise TypeError("this TokenVerifier has an httpx.AsyncClient: call averify()")
        kid = _kid(token)
        if self._cache.should_fetch(kid, time.monotonic()):
            with self._thread_lock:
                # Asked again under the lock: another thread may have fetched while this waited.
                started = self._begin_fetch(kid)
                if started is not None:
                    self._finish_fetch(started, self._fetch_sync)
        return self._check(token, self._cache.resolve(kid))

    async def averify(self, token: str) -> Claims:
        """Verify a token and return its claims, without blocking the event loop.

        Raises:
            InvalidToken: the token must be refused; ``reason`` says why.
            KeySetUnavailable: no keys could be fetched (an outage, not a bad token).
        """
        kid = _kid(token)
        if self._cache.should_fetch(kid, time.monotonic()):
            async with self._task_lock:
                started = self._begin_fetch(kid)
                if started is not None:
                    try:
                        document = await self._fetch_async()
                    except (httpx.HTTPError, ValueError) as exc:
                        self._failed(exc)
                    else:
                        self._store(document, started)
        return self._check(token, self._cache.resolve(kid))

    def _check(self, token: str, key: jwt.PyJWK) -> Claims:
        return _decode(
            token,
            key,
            audience=self.audience,
            issuer=[self.issuer, LEGACY_ISSUER],
            leeway=self.leeway,
        )

    def _begin_fetch(self, kid: str) -> float | None:
        """Claim the next fetch: its start time, or ``None`` when no fetch is due."""
        now = time.monotonic()
        if not self._cache.should_fetch(kid, now):
            return None
        self._cache.attempted_at = now
        return now

    def _finish_fetch(self, started: float, fetch: Callable[[], Any]) -> None:
        try:
            document = fetch()
        except (httpx.HTTPError, ValueError) as exc:
            self._failed(exc)
        else:
            self._store(document, started)

    def _fetch_sync(self) -> Any:
        if isinstance(self._http, httpx.Client):
            return _document(self._http.get(self.jwks_url, timeout=self._fetch_timeout))
        with httpx.Client() as http:
            return _document(http.get(self.jwks_url, timeout=self._fetch_timeout))

    async def _fetch_async(self) -> Any:
        if isinstance(self._http, httpx.AsyncClient):
            return _document(await self._http.get(self.jwks_url, timeout=self._fetch_timeout))
        if isinstance(self._http, httpx.Client):
            return await anyio.to_thread.run_sync(self._fetch_sync)
        async with httpx.AsyncClient() as http:
            return _document(await http.get(self.jwks_url, timeout=self._fetch_timeout))

    def _store(self, document: Any, fetched_at: float) -> None:
        try:
            keys = parse_jwks(document)
        except ValueError as exc:
            self._failed(exc)
            return
        self._cache.keys = keys
        self._cache.fetched_at = fetched_at

    def _failed(self, exc: Exception) -> None:
        logger.warning(
            "JWKS fetch from %s failed (%s); %d cached key(s) stay in use",
            self.jwks_url,
            type(exc).__name__,
            len(self._cache.keys),
        )
