"""Events: what happened to a client's verifications and tokens, told once per change.

:func:`emit` is the one way to record an event. Call it inside the transaction of the change it
announces (``lifecycle.transition`` does for every status change, ``tokens`` for every
revocation): the event row and one outbox-carried delivery per subscribed webhook endpoint
commit with the change or not at all, and the worker delivers them afterwards.

An event is a pointer. Its ``data`` holds ids, the status, a reason code and the level, plus the
client's own ``external_user_id`` (``[erased]`` once the person's data is erased), never a
masked value or anything the client did not send itself; the client reads details with its key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.errors import ProblemError
from app.hotcache import ENDPOINT_STATES, EndpointStates
from app.models import Client, Event, OutboxJob, Status, Verification, WebhookDelivery
from app.models import WebhookEndpoint as Endpoint
from app.models._types import utcnow
from app.services import outbox

#: Statuses whose reaching is announced (``pending`` is where verifications start).
ANNOUNCED_STATUSES: Final = tuple(s for s in Status if s != Status.PENDING)
TOKEN_REVOKED: Final = "token.revoked"  # noqa: S105 (an event type)
#: Emergency suspension of new verifications and token issue (Art. 25) and its end.
ISSUANCE_SUSPENDED: Final = "issuance.suspended"
ISSUANCE_RESUMED: Final = "issuance.resumed"
PING: Final = "ping"
#: Every event type, in the order the documentation lists them.
EVENT_TYPES: Final = (
    *(f"verification.{s.value}" for s in ANNOUNCED_STATUSES),
    TOKEN_REVOKED,
    ISSUANCE_SUSPENDED,
    ISSUANCE_RESUMED,
    PING,
)
WEBHOOK_JOB: Final = "webhook"
ERASED_USER: Final = "[erased]"


def subscribed(endpoint_events: str | None, event_type: str) -> bool:
    """Whether an endpoint's event filter (JSON list, or null for all) takes ``event_type``.
    A ``ping`` goes only where it is sent explicitly."""
    if event_type == PING:
        return False
    return endpoint_events is None or event_type in json.loads(endpoint_events)


async def emit(
    session: AsyncSession,
    *,
    client_id: str,
    type: str,
    verification: Verification | None = None,
    status: str | None = None,
    reason: str | None = None,
    jti: str | None = None,
    endpoints: Sequence[Endpoint] | None = None,
) -> Event:
    """Record an event and queue its deliveries, inside the caller's transaction.

    Args:
        session: The transaction of the change being announced (not committed here).
        client_id: The client whose event it is.
        type: One of :data:`EVENT_TYPES`.
        verification: The verification it concerns, if any (ids, level and the client's user
            id are taken from it).
        status: The status to report; the verification's current status by default.
        reason: A reason code (never free text).
        jti: The token's id, for ``token.revoked``.
        endpoints: Deliver only to these (``ping``); by default to every enabled endpoint of
            the client subscribed to ``type``.

    Returns:
        The new event (its ``id`` is the ``webhook-id`` of every delivery).
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    livemode, subscribers = await _subscribers(session, client_id)
    event = Event(
        client_id=client_id,
        type=type,
        livemode=livemode,
        verification_id=verification.id if verification else None,
        external_user_id=verification.external_user_id if verification else None,
        status=status or (verification.status if verification else None),
        reason=reason,
        level=verification.level if verification else None,
        jti=jti,
    )
    session.add(event)
    if endpoints is not None:
        targets = [e.id for e in endpoints]
    else:
        targets = [eid for eid, filt in subscribers if subscribed(filt, type)]
    for endpoint_id in targets:
        queue_delivery(session, event, endpoint_id)
    return event


async def _subscribers(
    session: AsyncSession, client_id: str
) -> tuple[bool, tuple[tuple[str, str | None], ...]]:
    """Whether the client is live, and its enabled endpoints with their event filters: from
    this process's copy while its invalidation subscription is healthy (every endpoint change
    drops it everywhere before it is answered), else in one statement from the database."""
    cache = session.info.get(ENDPOINT_STATES)
    epoch = cache.epoch() if isinstance(cache, EndpointStates) else None
    if isinstance(cache, EndpointStates):
        held = cache.get(client_id, epoch)
        if held is not None:
            return held[0] == "live", held[1]
    rows = (
        await session.execute(
            select(Client.mode, Endpoint.id, Endpoint.events)
            .select_from(Client)
            .outerjoin(
                Endpoint,
                (col(Endpoint.client_id) == col(Client.id))
                & col(Endpoint.disabled_at).is_(None)
                & col(Endpoint.deleted_at).is_(None),
            )
            .where(col(Client.id) == client_id)
        )
    ).all()
    if not rows:
        raise ValueError("no such client")
    mode = str(rows[0][0])
    subscribers = tuple((str(eid), filt) for _, eid, filt in rows if eid is not None)
    if isinstance(cache, EndpointStates):
        cache.put(client_id, epoch, (mode, subscribers))
    return mode == "live", subscribers


def queue_delivery(
    session: AsyncSession, event: Event, endpoint_id: str, delivery: WebhookDelivery | None = None
) -> WebhookDelivery:
    """Add a delivery of ``event`` to ``endpoint_id`` (or put ``delivery`` back in the queue)
    and the outbox job that carries it; wake the worker after the commit."""
    if delivery is None:
        delivery = WebhookDelivery(
            event_id=event.id, endpoint_id=endpoint_id, client_id=event.client_id
        )
        session.add(delivery)
    outbox.queue(session, OutboxJob(kind=WEBHOOK_JOB, lane=endpoint_id, payload=delivery.id))
    return delivery


def data_of(event: Event) -> dict[str, Any]:
    data: dict[str, Any] = {
        "verification_id": event.verification_id,
        "external_user_id": event.external_user_id,
        "status": event.status,
        "reason": event.reason,
        "level": event.level,
    }
    if event.type == TOKEN_REVOKED:
        data["jti"] = event.jti
    return data


def as_object(event: Event) -> dict[str, Any]:
    """The event as the API lists it and webhooks carry it."""
    return {
        "id": event.id,
        "type": event.type,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "livemode": event.livemode,
        "data": data_of(event),
    }


def body_of(event: Event) -> bytes:
    """The exact bytes a webhook delivers (and signs): compact UTF-8 JSON."""
    return json.dumps(as_object(event), ensure_ascii=False, separators=(",", ":")).encode()


async def redact_user(session: AsyncSession, verification_id: str) -> None:
    """Erasure: the verification's events (and so its undelivered payloads, built from them at
    delivery time) carry ``[erased]`` instead of the client's user id."""
    await session.flush()  # events emitted earlier in this transaction are redacted too
    await session.execute(
        update(Event)
        .where(col(Event.verification_id) == verification_id)
        .values(external_user_id=ERASED_USER)
        .execution_options(synchronize_session=False)
    )


async def page(
    session: AsyncSession,
    client_id: str,
    *,
    after: str | None,
    limit: int,
    retention_days: int,
) -> tuple[list[Event], bool]:
    """The client's events after the event ``after`` (oldest first), at most ``limit``, and
    whether more follow. Only events of the last ``retention_days`` are listed."""
    query = select(Event).where(
        col(Event.client_id) == client_id,
        col(Event.created_at) >= utcnow() - timedelta(days=retention_days),
    )
    if after is not None:
        cursor = (
            await session.execute(
                select(Event.seq).where(col(Event.id) == after, col(Event.client_id) == client_id)
            )
        ).scalar_one_or_none()
        if cursor is None:
            raise ProblemError("not_found", "'after' names no event of this client")
        query = query.where(col(Event.seq) > cursor)
    rows = list((await session.execute(query.order_by(col(Event.seq)).limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit
