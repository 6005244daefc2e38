"""The sender registry: test-mode clients always get the sandbox inbox; live clients get the
sender named by ``REALNAME_LIVE_SENDER``. An unknown name, or a sender that cannot start for
want of configuration, stops the service at start-up."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.senders.aliyun_sms import AliyunSmsSender
from app.senders.base import Sender
from app.senders.console import ConsoleSender
from app.senders.http_gateway import HttpGatewaySender
from app.senders.sandbox import SandboxSender
from app.senders.tencent_sms import TencentSmsSender
from app.settings import Settings, SettingsError


@dataclass
class SenderContext:
    settings: Settings
    http_client: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


SenderFactory = Callable[[SenderContext], Sender]


def _gateway(ctx: SenderContext) -> Sender:
    s = ctx.settings
    if not s.sms_gateway_url or s.sms_gateway_secret is None:
        raise ValueError("REALNAME_SMS_GATEWAY_URL and REALNAME_SMS_GATEWAY_SECRET must be set")
    return HttpGatewaySender(
        ctx.http_client,
        s.sms_gateway_url,
        s.sms_gateway_secret.get_secret_value(),
        legacy_signature=s.sms_gateway_legacy_signature,
    )


BUILTIN: dict[str, SenderFactory] = {
    "console": lambda ctx: ConsoleSender(),
    "http_gateway": _gateway,
    "tencent_sms": lambda ctx: TencentSmsSender.from_env(ctx.http_client, ctx.environ),
    "aliyun_sms": lambda ctx: AliyunSmsSender.from_env(ctx.http_client, ctx.environ),
}


@dataclass
class Senders:
    sandbox: Sender
    live: Sender

    def for_mode(self, mode: str) -> Sender:
        return self.sandbox if mode == "test" else self.live


def build_senders(
    settings: Settings, http_client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> Senders:
    ctx = SenderContext(settings=settings, http_client=http_client, sessions=sessions)
    name = settings.live_sender
    if name not in BUILTIN:
        raise SettingsError(f"unknown sender {name!r}; known: {', '.join(sorted(BUILTIN))}")
    try:
        live = BUILTIN[name](ctx)
    except ValueError as exc:
        raise SettingsError(f"sender {name!r} cannot start: {exc}") from exc
    return Senders(sandbox=SandboxSender(sessions, settings.sandbox_message_ttl_seconds), live=live)
