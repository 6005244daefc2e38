"""Published collection-rules versions (consent, Art. 41)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.hotcache import TtlMap
from app.models import Policy
from app.services import audit

DEFAULT_POLICY_VERSION = "2026-01"

#: ``session.info`` key of the runtime's cache of published versions (a :class:`TtlMap`).
POLICY_REFS = "policy_refs"


def default_policy_body() -> str:
    return (
        resources.files("app.policies").joinpath(f"{DEFAULT_POLICY_VERSION}.md").read_text("utf-8")
    )


async def get(session: AsyncSession, version: str) -> Policy | None:
    return await session.get(Policy, version)


@dataclass(frozen=True, slots=True)
class PolicyRef:
    version: str
    sha256: str


async def published(
    session: AsyncSession, version: str, cache: TtlMap | None = None
) -> PolicyRef | None:
    """The published version ``version`` (what a consent records), or None. Published versions
    never change, so a found one is reused from ``cache`` (by default the runtime's, which every
    session of it carries)."""
    cache = cache if cache is not None else session.info.get(POLICY_REFS)
    if cache is None:
        policy = await get(session, version)
        return None if policy is None else PolicyRef(policy.version, policy.sha256)
    ref: PolicyRef | None = cache.get(version)
    if ref is None:
        policy = await get(session, version)
        if policy is None:
            return None
        ref = PolicyRef(policy.version, policy.sha256)
        cache.put(version, ref)
    return ref


async def current(session: AsyncSession) -> Policy | None:
    return (
        await session.execute(
            select(Policy)
            .order_by(col(Policy.published_at).desc(), col(Policy.version).desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def publish(
    session: AsyncSession, version: str, body: str, *, actor_id: str | None = None
) -> Policy:
    """Publish a new version. Published versions are immutable: re-publishing one is refused."""
    if await session.get(Policy, version) is not None:
        raise ValueError(f"policy version {version!r} is already published")
    policy = Policy(version=version, body=body, sha256=hashlib.sha256(body.encode()).hexdigest())
    session.add(policy)
    await session.flush()
    await audit.record(
        session,
        action="policy.published",
        subject_type="policy",
        subject_id=version,
        actor_type="admin" if actor_id else "system",
        actor_id=actor_id,
        data={"sha256": policy.sha256},
    )
    return policy


async def ensure_default(session: AsyncSession) -> None:
    if await session.get(Policy, DEFAULT_POLICY_VERSION) is None:
        await publish(session, DEFAULT_POLICY_VERSION, default_policy_body())
