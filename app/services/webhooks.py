"""Webhook endpoints of a client: register, list, rotate the secret, remove, ping, and read the
delivery attempts. At most :data:`MAX_ENDPOINTS` per client.

Secrets are ``whsec_`` strings shown once, at creation and at rotation, and kept sealed
(AES-256-GCM, bound to the endpoint id) because the worker signs with them. After a rotation
the previous secret keeps signing alongside the new one for :data:`ROTATION_OVERLAP`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, func, select

from app.crypto import seal, unseal
from app.errors import ProblemError
from app.hotcache import endpoints_changed
from app.models import Client, Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.models._types import utcnow
from app.services import audit, events
from app.settings import Settings
from app.webhooks import signing, urls

MAX_ENDPOINTS: Final = 5
ROTATION_OVERLAP: Final = timedelta(hours=24)
_SECRET_SEAL: Final = "webhook-secret/v1"  # noqa: S105 (a sealing purpose)


def policy_for(settings: Settings, livemode: bool) -> urls.Policy:
    """The URL rules for a client: relaxed for test mode on a dev (or test) service."""
    return urls.Policy(
        relaxed=not livemode and settings.env in ("dev", "test"),
        allowed_hosts=settings.webhook_hosts,
    )


def seal_secret(master_key: bytes, endpoint_id: str, secret: str) -> str:
    return seal(master_key, _SECRET_SEAL, secret.encode(), endpoint_id.encode())


def signing_keys(master_key: bytes, endpoint: WebhookEndpoint) -> list[bytes]:
    """The keys that sign deliveries to ``endpoint`` now: its secret, and the previous one
    during the rotation overlap."""
    sealed = [endpoint.secret_sealed]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret_sealed and until is not None and until > utcnow():
        sealed.append(endpoint.previous_secret_sealed)
    return [
        signing.key_of(unseal(master_key, _SECRET_SEAL, s, endpoint.id.encode()).decode())
        for s in sealed
    ]


def event_filter(types: list[str] | None) -> str | None:
    """Check the requested event types; the JSON stored for them (None = all)."""
    if types is None:
        return None
    unknown = sorted({t for t in types if t not in events.EVENT_TYPES or t == events.PING})
    if unknown or not types:
        raise ProblemError(
            "unknown_event_type",
            "Event types must be a non-empty list of: "
            + ", ".join(t for t in events.EVENT_TYPES if t != events.PING),
        )
    return json.dumps(sorted(set(types)))


def event_types(endpoint: WebhookEndpoint) -> list[str] | None:
    return None if endpoint.events is None else list(json.loads(endpoint.events))


async def check_url(settings: Settings, client: Client, url: str) -> None:
    try:
        await urls.check(url, policy_for(settings, client.mode == "live"))
    except urls.UrlRefused as refused:
        raise ProblemError(refused.code, refused.detail) from None


@dataclass(frozen=True)
class Created:
    endpoint: WebhookEndpoint
    secret: str


async def create(
    session: AsyncSession,
    settings: Settings,
    client: Client,
    *,
    url: str,
    types: list[str] | None,
) -> Created:
    """Register an endpoint (422 ``invalid_webhook_url``, ``webhook_url_not_allowed``,
    ``unknown_event_type``, ``too_many_endpoints``)."""
    stored_types = event_filter(types)
    await check_url(settings, client, url)
    count = (
        await session.execute(
            select(func.count())
            .select_from(WebhookEndpoint)
            .where(
                col(WebhookEndpoint.client_id) == client.id,
                col(WebhookEndpoint.deleted_at).is_(None),
            )
        )
    ).scalar_one()
    if count >= MAX_ENDPOINTS:
        raise ProblemError(
            "too_many_endpoints", f"A client may have at most {MAX_ENDPOINTS} webhook endpoints"
        )
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(client_id=client.id, url=url, events=stored_types, secret_sealed="")
    endpoint.secret_sealed = seal_secret(settings.master_key, endpoint.id, secret)
    session.add(endpoint)
    await session.flush()
    endpoints_changed(session)
    await _audit(session, "webhook_endpoint.created", endpoint, client.id)
    return Created(endpoint, secret)


async def _audit(
    session: AsyncSession,
    action: str,
    endpoint: WebhookEndpoint,
    actor_id: str | None,
    actor_type: str = "client",
    **data: str,
) -> None:
    await audit.record(
        session,
        action=action,
        subject_type="webhook_endpoint",
        subject_id=endpoint.id,
        actor_type=actor_type,
        actor_id=actor_id,
        data={"client_id": endpoint.client_id, **data},
    )


async def list_for(session: AsyncSession, client_id: str | None) -> list[WebhookEndpoint]:
    """A client's endpoints (``None``: every client's, for admins), oldest first."""
    query = select(WebhookEndpoint).where(col(WebhookEndpoint.deleted_at).is_(None))
    if client_id is not None:
        query = query.where(col(WebhookEndpoint.client_id) == client_id)
    return list((await session.execute(query.order_by(col(WebhookEndpoint.created_at)))).scalars())


async def get_for_client(
    session: AsyncSession, client: Client, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(
        col(WebhookEndpoint.id) == endpoint_id,
        col(WebhookEndpoint.client_id) == client.id,
        col(WebhookEndpoint.deleted_at).is_(None),
    )
    if lock:
        query = query.with_for_update()
    endpoint = (await session.execute(query)).scalar_one_or_none()
    if endpoint is None:
        raise ProblemError("not_found", "No such webhook endpoint")
    return endpoint


async def delete(session: AsyncSession, client: Client, endpoint_id: str) -> None:
    """Remove an endpoint; its queued deliveries end as failed (``endpoint_deleted``)."""
    endpoint = await get_for_client(session, client, endpoint_id, lock=True)
    endpoint.deleted_at = utcnow()
    session.add(endpoint)
    endpoints_changed(session)
    await _audit(session, "webhook_endpoint.deleted", endpoint, client.id)


async def rotate(
    session: AsyncSession, settings: Settings, client: Client, endpoint_id: str
) -> str:
    """A new secret; the current one keeps signing alongside it for 24 hours."""
    endpoint = await get_for_client(session, client, endpoint_id, lock=True)
    secret = signing.new_secret()
    endpoint.previous_secret_sealed = endpoint.secret_sealed
    endpoint.previous_secret_until = utcnow() + ROTATION_OVERLAP
    endpoint.secret_sealed = seal_secret(settings.master_key, endpoint.id, secret)
    session.add(endpoint)
    await _audit(session, "webhook_endpoint.secret_rotated", endpoint, client.id)
    return secret


async def ping(session: AsyncSession, client: Client, endpoint_id: str) -> Event:
    """Send a ``ping`` event to one endpoint."""
    endpoint = await get_for_client(session, client, endpoint_id)
    return await events.emit(session, client_id=client.id, type=events.PING, endpoints=[endpoint])


@dataclass(frozen=True)
class AttemptRow:
    attempt: WebhookAttempt
    event_id: str
    event_type: str


async def attempts(
    session: AsyncSession,
    *,
    endpoint_id: str | None = None,
    client_id: str | None = None,
    limit: int = 50,
) -> list[AttemptRow]:
    """Recent delivery attempts, newest first, for one endpoint or all of a client's."""
    query = (
        select(WebhookAttempt, WebhookDelivery.event_id, Event.type)
        .join(WebhookDelivery, col(WebhookDelivery.id) == col(WebhookAttempt.delivery_id))
        .join(Event, col(Event.id) == col(WebhookDelivery.event_id))
    )
    if endpoint_id is not None:
        query = query.where(col(WebhookAttempt.endpoint_id) == endpoint_id)
    if client_id is not None:
        query = query.where(col(WebhookDelivery.client_id) == client_id)
    rows = await session.execute(
        query.order_by(col(WebhookAttempt.attempted_at).desc(), col(WebhookAttempt.id)).limit(limit)
    )
    return [AttemptRow(a, eid, etype) for a, eid, etype in rows.all()]
