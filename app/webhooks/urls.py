"""Where a webhook may go (server-side request forgery rules).

A live client's endpoint must be ``https://`` and every address its host resolves to must be
public: loopback, private, shared (CGNAT), link-local (cloud metadata at 169.254.169.254 and
fd00:ec2::254), multicast, reserved and unspecified addresses are refused. The rules are applied
when the endpoint is registered and again before every delivery, and the delivery connects to
the address that was just checked, so a name that later resolves elsewhere (DNS rebinding)
gains nothing.

Two relaxations: a test-mode client's endpoint may be ``http://`` and on loopback while the
service runs with ``REALNAME_ENV=dev`` (or ``test``), so integrators can receive events on their
laptop; and hosts named in ``REALNAME_WEBHOOK_ALLOWED_HOSTS`` may resolve to internal addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Final

import httpx

MAX_URL_CHARS: Final = 2000
RESOLVE_TIMEOUT_SECONDS: Final = 3.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(Exception):
    """A URL the rules refuse; ``code`` is ``invalid_webhook_url`` (not a usable URL) or
    ``webhook_url_not_allowed`` (a usable URL the rules forbid)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Policy:
    """How strict to be for one client: ``relaxed`` for a test-mode client on a dev service."""

    relaxed: bool
    allowed_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Target:
    """A checked URL and the addresses to connect to, in the resolver's order (empty: an
    allowed host, connected to by name)."""

    url: httpx.URL
    addresses: tuple[IPAddress, ...]


def parse(url: str, policy: Policy) -> httpx.URL:
    """Parse and check the form of ``url`` (no network)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise UrlRefused("invalid_webhook_url", f"The URL must be 1-{MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise UrlRefused("invalid_webhook_url", "The URL may not contain spaces or controls")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise UrlRefused("invalid_webhook_url", "The URL is not valid") from None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise UrlRefused("invalid_webhook_url", "The URL must be an absolute http(s) URL")
    if parsed.userinfo:
        raise UrlRefused("invalid_webhook_url", "The URL may not carry a user name or password")
    if parsed.fragment:
        raise UrlRefused("invalid_webhook_url", "The URL may not have a fragment")
    if parsed.scheme != "https" and not policy.relaxed:
        raise UrlRefused("webhook_url_not_allowed", "Webhook URLs must use https")
    return parsed


def address_allowed(address: IPAddress, policy: Policy) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if policy.relaxed and address.is_loopback:
        return True
    return address.is_global and not address.is_multicast


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        raise UrlRefused("invalid_webhook_url", "The URL's host does not resolve") from None
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise UrlRefused("invalid_webhook_url", "The URL's host does not resolve")
    return found


async def check(url: str, policy: Policy) -> Target:
    """Check ``url`` against the rules, resolving its host; return where to connect.

    Raises:
        UrlRefused: the URL is malformed, does not resolve, or is not allowed.
    """
    parsed = parse(url, policy)
    host = parsed.host.lower().rstrip(".")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = _literal(host)
    if literal is None and host in policy.allowed_hosts:
        return Target(parsed, ())
    addresses = [literal] if literal is not None else await _resolve(host, port)
    # Every address must pass: a name that also resolves inside the network is refused.
    if not all(address_allowed(a, policy) for a in addresses):
        raise UrlRefused(
            "webhook_url_not_allowed",
            "The URL's host resolves to a loopback, private, link-local or reserved address",
        )
    return Target(parsed, tuple(addresses))
