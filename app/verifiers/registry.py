"""The verifier registry: names to factories, chosen by settings, checked at start-up.

Built-in verifiers are listed explicitly in :data:`BUILTIN`. Third-party packages add theirs
through the ``realname.verifiers`` entry-point group: each entry point names a factory
``(context: FactoryContext) -> Verifier``. A name in the settings that no factory provides, or a
verifier of the wrong check type, stops the service at start-up.

Test-mode clients always get the sandbox verifiers (:data:`SANDBOX`), whatever the settings say:
a test key can never reach a real registry.

Failover: a check type may name an ordered list of verifiers
(``{"id_registry": ["tencent_faceid_id2", "aliyun_id2meta"]}``). The checks runner asks the
next one only when the previous answered ``unavailable`` (its breaker open included): a definite
answer, billed or not, is final (see ``app.services.checks``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import httpx

from app.providers.breaker import CircuitBreaker
from app.settings import Settings, SettingsError
from app.verifiers.aliyun_cloudauth import AliyunId2MetaVerifier, AliyunMobile3MetaVerifier
from app.verifiers.base import Verifier
from app.verifiers.http_registry import HttpCarrierVerifier, HttpIdRegistryVerifier
from app.verifiers.mock_registry import MockCarrierVerifier, MockIdRegistryVerifier
from app.verifiers.network_identity import (
    HttpNetworkIdentityVerifier,
    NetworkIdentityVerifier,
    SandboxNetworkIdentityVerifier,
)
from app.verifiers.tencent_faceid import TencentIdCardVerifier, TencentPhoneVerifier

_FromEnv = (
    type[TencentIdCardVerifier]
    | type[TencentPhoneVerifier]
    | type[AliyunId2MetaVerifier]
    | type[AliyunMobile3MetaVerifier]
)

ENTRY_POINT_GROUP = "realname.verifiers"
#: Check types a verifier plug-in can serve. ``sms_otp`` is the service's own interactive check.
AUTOMATED_CHECKS = ("id_registry", "carrier_3e")


@dataclass
class FactoryContext:
    """What a factory may use to build its verifier."""

    settings: Settings
    http_client: httpx.AsyncClient
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    #: One breaker per upstream, shared by the verifiers that call it.
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)

    def breaker(self, upstream: str) -> CircuitBreaker:
        return self.breakers.setdefault(upstream, CircuitBreaker())


VerifierFactory = Callable[[FactoryContext], Verifier]


def _http(cls: type[HttpIdRegistryVerifier] | type[HttpCarrierVerifier]) -> VerifierFactory:
    def build(ctx: FactoryContext) -> Verifier:
        token = ctx.settings.registry_token
        return cls(
            ctx.http_client,
            ctx.settings.registry_url,
            api_token=token.get_secret_value() if token else None,
            breaker=ctx.breaker(ctx.settings.registry_url),
        )

    return build


def _provider(cls: _FromEnv, upstream: str) -> VerifierFactory:
    def build(ctx: FactoryContext) -> Verifier:
        verifier = cls.from_env(ctx.http_client, ctx.environ)
        verifier.breaker = ctx.breaker(upstream)
        return verifier

    return build


BUILTIN: dict[str, VerifierFactory] = {
    "mock_id_registry": lambda ctx: MockIdRegistryVerifier(ctx.settings.mock_people_file),
    "mock_carrier_3e": lambda ctx: MockCarrierVerifier(ctx.settings.mock_people_file),
    "http_id_registry": _http(HttpIdRegistryVerifier),
    "http_carrier_3e": _http(HttpCarrierVerifier),
    "tencent_faceid_id2": _provider(TencentIdCardVerifier, "tencent-faceid"),
    "tencent_faceid_phone3": _provider(TencentPhoneVerifier, "tencent-faceid"),
    "aliyun_id2meta": _provider(AliyunId2MetaVerifier, "aliyun-cloudauth"),
    "aliyun_mobile3meta": _provider(AliyunMobile3MetaVerifier, "aliyun-cloudauth"),
}

#: What test-mode clients use, per check type.
SANDBOX = {"id_registry": "mock_id_registry", "carrier_3e": "mock_carrier_3e"}


def available_factories() -> dict[str, VerifierFactory]:
    """Built-ins plus installed entry points (a plug-in may not shadow a built-in)."""
    factories = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in factories:
            raise SettingsError(f"verifier plug-in {ep.name!r} would shadow a built-in verifier")
        factories[ep.name] = ep.load()
    return factories


@dataclass
class Verifiers:
    sandbox: dict[str, Verifier]
    #: Per check type, the live verifiers in failover order.
    live: dict[str, list[Verifier]]
    #: Network identity (网号/网证): the sandbox for test keys; live only when configured.
    network_sandbox: NetworkIdentityVerifier = field(default_factory=SandboxNetworkIdentityVerifier)
    network_live: NetworkIdentityVerifier | None = None

    def network_for_mode(self, mode: str) -> NetworkIdentityVerifier | None:
        """The network identity verifier for ``mode``; ``None`` when live has none."""
        return self.network_sandbox if mode == "test" else self.network_live

    def for_mode(self, mode: str, check_type: str) -> Verifier:
        """The first verifier of the chain for ``mode`` and ``check_type``."""
        return self.chain(mode, check_type)[0]

    def chain(self, mode: str, check_type: str) -> list[Verifier]:
        """The verifiers to ask, in order; test mode has exactly the sandbox one."""
        if mode == "test":
            return [self.sandbox[check_type]]
        return self.live[check_type]

    def breaker_states(self) -> dict[str, str]:
        """Each live verifier's circuit-breaker state (``closed``, ``open``, ``half_open``);
        verifiers without a breaker (the mocks) are left out."""
        states: dict[str, str] = {}
        network = [self.network_live] if self.network_live is not None else []
        verifiers: list[Verifier | NetworkIdentityVerifier] = [
            v for chain in self.live.values() for v in chain
        ]
        for verifier in [*verifiers, *network]:
            breaker = getattr(verifier, "breaker", None)
            if isinstance(breaker, CircuitBreaker):
                states[verifier.name] = breaker.state.value
        return states


def _build(
    name: str, check_type: str, ctx: FactoryContext, factories: Mapping[str, VerifierFactory]
) -> Verifier:
    if name not in factories:
        known = ", ".join(sorted(factories))
        raise SettingsError(f"unknown verifier {name!r} for {check_type}; known: {known}")
    try:
        verifier = factories[name](ctx)
    except ValueError as exc:
        raise SettingsError(f"verifier {name!r} cannot start: {exc}") from exc
    if not isinstance(verifier, Verifier):
        raise SettingsError(f"verifier {name!r} does not implement the Verifier protocol")
    if verifier.check_type != check_type:
        raise SettingsError(f"verifier {name!r} performs {verifier.check_type}, not {check_type}")
    return verifier


def build_verifiers(settings: Settings, http_client: httpx.AsyncClient) -> Verifiers:
    """Instantiate the sandbox and the configured live verifiers; fail on any unknown name."""
    factories = available_factories()
    ctx = FactoryContext(settings=settings, http_client=http_client)
    unknown_types = set(settings.live_verifiers) - set(AUTOMATED_CHECKS)
    if unknown_types:
        raise SettingsError(
            f"REALNAME_LIVE_VERIFIERS names unknown check types: {sorted(unknown_types)}"
        )
    missing = set(AUTOMATED_CHECKS) - set(settings.live_verifiers)
    if missing:
        raise SettingsError(f"REALNAME_LIVE_VERIFIERS has no verifier for: {sorted(missing)}")
    sandbox = {t: _build(n, t, ctx, factories) for t, n in SANDBOX.items()}
    live: dict[str, list[Verifier]] = {}
    for check_type, names in settings.live_verifiers.items():
        chain = [names] if isinstance(names, str) else list(names)
        if not chain or len(set(chain)) != len(chain):
            raise SettingsError(
                f"REALNAME_LIVE_VERIFIERS[{check_type!r}] must name one or more distinct verifiers"
            )
        live[check_type] = [_build(name, check_type, ctx, factories) for name in chain]
    if settings.env == "prod" and any(v.sandbox for c in live.values() for v in c):
        raise SettingsError("REALNAME_ENV=prod: live clients may not use sandbox verifiers")
    return Verifiers(sandbox=sandbox, live=live, network_live=_network_live(settings, ctx))


def _network_live(settings: Settings, ctx: FactoryContext) -> NetworkIdentityVerifier | None:
    """The operator's network identity gateway, when configured (fail at start-up otherwise)."""
    if settings.live_network_identity is None:
        return None
    url = settings.network_identity_gateway_url
    if not url:
        raise SettingsError(
            "REALNAME_LIVE_NETWORK_IDENTITY needs REALNAME_NETWORK_IDENTITY_GATEWAY_URL"
        )
    token = settings.network_identity_gateway_token
    return HttpNetworkIdentityVerifier(
        ctx.http_client,
        url,
        token.get_secret_value() if token else None,
        breaker=ctx.breaker(url),
    )
