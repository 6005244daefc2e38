"""The rules ``REALNAME_ENV=prod`` holds settings to, each refusal one line naming the variable
and the rule it breaks (never the value: it may be a secret).

Why these rules: every one of them is a mistake that looks fine on a developer's machine and
is dangerous in production.

- Keys must be long and random, and never a value printed in the documentation: a key of 32
  zero bytes or a copied example makes every blind index and HMAC guessable.
- Outbound URLs (registries, SMS gateways) must be ``https://`` to a public address: plain http
  leaks personal data in transit, and a private, loopback or link-local address (the cloud's
  metadata service at 169.254.169.254) turns the service into a request forwarder. Origins an
  operator runs inside their own network are allowed by listing them in
  ``REALNAME_INTERNAL_URL_ALLOWLIST``.
- ``http_*`` verifiers need a registry URL set on purpose: the default is the mock registry's
  port, which matches every identity.
- SQLite is for one process on one machine; production runs PostgreSQL (an explicit override
  exists for single-host trials).
- ``/metrics`` tells who verifies how often: it needs a token.
- Forwarded headers are believed only from listed proxies; ``*`` lets any caller choose the
  address that sign-in throttling counts.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pydantic import SecretStr

#: Values that are not secrets, whatever their length.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "placeholder", "dev"})

#: Values printed in the documentation (README, ``.env.example``) as examples: refused in prod.
DOCUMENTED_EXAMPLES = frozenset(
    {
        "bXlfZG9jdW1lbnRlZF9leGFtcGxlX3NlY3JldF9rZXlfMQ",
        "ZXhhbXBsZV9ibGluZF9pbmRleF9rZXlfdmVyc2lvbl8x",
        "example-metrics-token-do-not-use-in-production",
        "example-sms-gateway-secret-do-not-use-in-production",
    }
)

MIN_KEY_BYTES = 32
MIN_SECRET_CHARS = 32
#: A random 32-byte key has about 30 distinct byte values; fewer than this is not random.
MIN_DISTINCT = 16
MIN_DISTINCT_CHARS = 12

#: Host names that always mean "this machine" or a cloud metadata service.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata.google.internal")


def decode_key(raw: str) -> bytes:
    """A key given as URL-safe base64 (what ``realname keys generate`` prints) or hex.

    Raises ValueError when it is neither."""
    raw = raw.strip()
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        return bytes.fromhex(raw)


def _is_progression(values: bytes | str) -> bool:
    """The same step between every neighbour (``aaaa``, ``0123…``): patterned, not random."""
    codes = list(values) if isinstance(values, bytes) else [ord(c) for c in values]
    steps = {b - a for a, b in itertools.pairwise(codes)}
    return len(steps) <= 1


def key_problem(variable: str, raw: str) -> str | None:
    """Why a binary key (secret key, a blind-index key) is unfit for production, or None."""
    if raw.strip() in DOCUMENTED_EXAMPLES:
        return f"{variable} is an example from the documentation; run `realname keys generate`"
    if raw.strip().lower() in PLACEHOLDER_SECRETS:
        return f"{variable} must be a real secret (run `realname keys generate`)"
    try:
        key = decode_key(raw)
    except ValueError:
        return f"{variable} must be URL-safe base64 (or hex)"
    if len(key) < MIN_KEY_BYTES:
        return f"{variable} must hold at least {MIN_KEY_BYTES} bytes"
    if len(set(key)) < MIN_DISTINCT or _is_progression(key):
        return f"{variable} must be random bytes (this one has a pattern or low entropy)"
    return None


def secret_problem(variable: str, raw: str) -> str | None:
    """Why a shared text secret (gateway secret, bearer token) is unfit for production."""
    value = raw.strip()
    if value in DOCUMENTED_EXAMPLES:
        return f"{variable} is an example from the documentation; run `realname keys generate`"
    if value.lower() in PLACEHOLDER_SECRETS:
        return f"{variable} must be a real secret (run `realname keys generate`)"
    if len(value) < MIN_SECRET_CHARS:
        return f"{variable} must be at least {MIN_SECRET_CHARS} characters"
    if len(set(value)) < MIN_DISTINCT_CHARS or _is_progression(value):
        return f"{variable} must be random (this one has a pattern or low entropy)"
    return None


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased (the unit the allow-list names)."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower().rpartition('@')[2]}"


def url_problem(variable: str, url: str, allowlist: Iterable[str]) -> str | None:
    """Why an outbound URL is unfit for production, or None. Origins in ``allowlist`` may be
    plain http and private; nothing else may."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".").lower()
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        return f"{variable} must be a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"{variable} must be an https:// URL with a host"
    if origin(url) in {origin(u) for u in allowlist}:
        return None
    if parts.scheme != "https":
        return (
            f"{variable} must use https:// (or list its origin in REALNAME_INTERNAL_URL_ALLOWLIST)"
        )
    address = _address(host)
    if (
        host in _LOCAL_NAMES
        or host.endswith(".localhost")
        or (address is not None and not address.is_global)
    ):
        return (
            f"{variable} must not point at a private, loopback or link-local address "
            "(or list its origin in REALNAME_INTERNAL_URL_ALLOWLIST)"
        )
    return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host name denotes literally, including the legacy IPv4 spellings that
    resolvers accept (``127.1``, ``2130706433``, ``0x7f.0.0.1``); None for a DNS name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def proxy_problem(value: str) -> str | None:
    """Why ``REALNAME_TRUSTED_PROXIES`` is not a list of addresses and networks, or None."""
    for item in split_list(value):
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return "REALNAME_TRUSTED_PROXIES must list IP addresses or networks, comma-separated"
    return None


def trusts_everyone(value: str) -> bool:
    for item in split_list(value):
        if item == "*":
            return True
        network = ipaddress.ip_network(item, strict=False)
        if network.prefixlen == 0:
            return True
    return False


def versioned_keys_problem(variable: str, secret: SecretStr) -> str | None:
    """Why a ``"1:<base64>,2:<base64>"`` list of keys is unfit for production, or None."""
    raw = secret.get_secret_value()
    if raw.strip().lower() in PLACEHOLDER_SECRETS:
        return f"{variable} must be a real secret (run `realname keys generate`)"
    for part in raw.split(","):
        version, _, key = part.strip().partition(":")
        if not version.isascii() or not version.isdigit() or not key:
            return f"{variable} must look like '1:<base64>,2:<base64>'"
        problem = key_problem(f"{variable} (version {int(version)})", key)
        if problem is not None:
            return problem
    return None
