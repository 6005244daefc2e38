"""Delivering events to webhook endpoints: the worker's side of the outbox's ``webhook`` jobs.

At least once: a delivery is retried until the endpoint answers 2xx within the timeout, on the
schedule of :data:`RETRY_SCHEDULE` (about 85 hours in all, with jitter), then marked
``failed`` and shown to admins. The job's lease covers a worker that dies mid-request: another
worker takes the job over and sends the same event again, with the same ``webhook-id``.
An endpoint whose deliveries have failed for :data:`DISABLE_AFTER` without a single success is
disabled (audited); its queued deliveries then end as failed.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app import metrics
from app.db import session_scope
from app.errors import ProblemError
from app.hotcache import endpoints_changed
from app.models import Event, OutboxJob, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.models._types import utcnow
from app.services import audit, events, webhooks
from app.services.runtime import Runtime
from app.webhooks import signing, transport

logger = logging.getLogger(__name__)

#: Seconds to wait after the n-th failed attempt (the first attempt goes at once).
RETRY_SCHEDULE: Final = (5, 300, 1800, 7200, 18000, 36000, 36000, 50400, 72000, 86400)
JITTER: Final = 0.1
DISABLE_AFTER: Final = timedelta(days=5)

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


def next_delay(failed_attempts: int, rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after ``failed_attempts`` failures; None when done."""
    if failed_attempts < 1 or failed_attempts > len(RETRY_SCHEDULE):
        return None
    base = RETRY_SCHEDULE[failed_attempts - 1]
    return base * (1 + (rng or random).uniform(-JITTER, JITTER))


@dataclass(frozen=True)
class _Loaded:
    delivery: WebhookDelivery
    endpoint: WebhookEndpoint
    event: Event


async def _load(runtime: Runtime, delivery_id: str | None) -> _Loaded | None:
    async with session_scope(runtime.sessions) as session:
        delivery = await session.get(WebhookDelivery, delivery_id) if delivery_id else None
        if delivery is None:
            return None
        endpoint = await session.get(WebhookEndpoint, delivery.endpoint_id)
        event = (
            await session.execute(select(Event).where(col(Event.id) == delivery.event_id))
        ).scalar_one_or_none()
        if endpoint is None or event is None:
            return None
        return _Loaded(delivery, endpoint, event)


async def deliver(runtime: Runtime, job: OutboxJob) -> None:
    """Make one attempt of the delivery ``job`` carries and record it, in one transaction with
    the job's completion or its rescheduling."""
    loaded = await _load(runtime, job.payload)
    if loaded is None or loaded.delivery.status != PENDING:
        await _finish_job(runtime, job.id)
        return
    delivery, endpoint, event = loaded.delivery, loaded.endpoint, loaded.event
    if endpoint.deleted_at is not None or endpoint.disabled_at is not None:
        reason = "endpoint_deleted" if endpoint.deleted_at is not None else "endpoint_disabled"
        async with session_scope(runtime.sessions) as session:
            await _settle(session, delivery.id, FAILED, error=reason)
            await _finish(session, job.id)
        return
    settings = runtime.settings
    body = events.body_of(event)
    headers = signing.headers(event.id, body, webhooks.signing_keys(runtime.master_key, endpoint))
    outcome = await transport.post(
        runtime.webhook_client,
        endpoint.url,
        body,
        headers,
        policy=webhooks.policy_for(settings, event.livemode),
        deadline_seconds=settings.webhook_timeout_seconds,
    )
    now = utcnow()
    attempts = delivery.attempts + 1
    delay = None if outcome.ok else next_delay(attempts)
    retry_at = now + timedelta(seconds=delay) if delay is not None else None
    async with session_scope(runtime.sessions) as session:
        session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                endpoint_id=endpoint.id,
                attempted_at=now,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                error=outcome.error,
                response_excerpt=outcome.excerpt,
                next_retry_at=retry_at,
            )
        )
        status = SUCCEEDED if outcome.ok else (PENDING if retry_at is not None else FAILED)
        await _settle(
            session,
            delivery.id,
            status,
            attempts=attempts,
            status_code=outcome.status_code,
            error=outcome.error,
            next_attempt_at=retry_at,
        )
        if retry_at is None:
            await _finish(session, job.id)
        else:
            await session.execute(
                update(OutboxJob)
                .where(col(OutboxJob.id) == job.id)
                .values(run_after=retry_at, locked_until=None, last_error=outcome.error)
            )
        await _track_endpoint(session, endpoint.id, ok=outcome.ok, now=now)
    metrics.WEBHOOK_ATTEMPTS.labels("ok" if outcome.ok else outcome.error or "failed").inc()
    logger.info(
        "webhook attempt",
        extra={
            "delivery_id": delivery.id,
            "event_id": event.id,
            "endpoint_id": endpoint.id,
            "status": outcome.status_code,
            "error": outcome.error,
            "latency_ms": outcome.latency_ms,
        },
    )


async def _settle(
    session: AsyncSession,
    delivery_id: str,
    status: str,
    *,
    attempts: int | None = None,
    status_code: int | None = None,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
) -> None:
    values: dict[str, object] = {
        "status": status,
        "last_error": error,
        "next_attempt_at": next_attempt_at,
        "completed_at": None if status == PENDING else utcnow(),
    }
    if attempts is not None:
        values.update(attempts=attempts, last_status_code=status_code)
    await session.execute(
        update(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id).values(**values)
    )


async def _finish(session: AsyncSession, job_id: str) -> None:
    await session.execute(
        update(OutboxJob)
        .where(col(OutboxJob.id) == job_id)
        .values(done_at=utcnow(), locked_until=None)
    )


async def _finish_job(runtime: Runtime, job_id: str) -> None:
    async with session_scope(runtime.sessions) as session:
        await _finish(session, job_id)


async def _track_endpoint(
    session: AsyncSession, endpoint_id: str, *, ok: bool, now: datetime
) -> None:
    """Start or end the endpoint's run of failures; disable it after five days of them."""
    if ok:
        await session.execute(
            update(WebhookEndpoint)
            .where(
                col(WebhookEndpoint.id) == endpoint_id,
                col(WebhookEndpoint.failing_since).is_not(None),
            )
            .values(failing_since=None)
        )
        return
    await session.execute(
        update(WebhookEndpoint)
        .where(col(WebhookEndpoint.id) == endpoint_id, col(WebhookEndpoint.failing_since).is_(None))
        .values(failing_since=now)
    )
    disabled = (
        await session.execute(
            update(WebhookEndpoint)
            .where(
                col(WebhookEndpoint.id) == endpoint_id,
                col(WebhookEndpoint.disabled_at).is_(None),
                col(WebhookEndpoint.failing_since) <= now - DISABLE_AFTER,
            )
            .values(disabled_at=now)
            .returning(col(WebhookEndpoint.client_id))
        )
    ).first()
    if disabled is not None:
        endpoints_changed(session)
        # Its queued deliveries end here; their jobs finish when next claimed.
        await session.execute(
            update(WebhookDelivery)
            .where(
                col(WebhookDelivery.endpoint_id) == endpoint_id,
                col(WebhookDelivery.status) == PENDING,
            )
            .values(
                status=FAILED,
                last_error="endpoint_disabled",
                completed_at=now,
                next_attempt_at=None,
            )
        )
        await audit.record(
            session,
            action="webhook_endpoint.disabled",
            subject_type="webhook_endpoint",
            subject_id=endpoint_id,
            actor_type="system",
            actor_id=None,
            data={"client_id": disabled[0], "reason": "failing_for_5_days"},
        )
        logger.warning("webhook endpoint disabled", extra={"endpoint_id": endpoint_id})


async def recent(
    session: AsyncSession,
    *,
    status: str = FAILED,
    client_id: str | None = None,
    limit: int = 100,
) -> list[tuple[WebhookDelivery, Event]]:
    """Deliveries in ``status``, newest first (admins)."""
    query = (
        select(WebhookDelivery, Event)
        .join(Event, col(Event.id) == col(WebhookDelivery.event_id))
        .where(col(WebhookDelivery.status) == status)
    )
    if client_id is not None:
        query = query.where(col(WebhookDelivery.client_id) == client_id)
    rows = await session.execute(
        query.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id)).limit(limit)
    )
    return [(d, e) for d, e in rows.all()]


async def redeliver(
    session: AsyncSession, delivery_id: str, *, admin_id: str
) -> tuple[WebhookDelivery, Event]:
    """Queue a finished delivery once more (same event, same ``webhook-id``); audited.
    Returns the delivery with its event."""
    delivery = (
        await session.execute(
            select(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id).with_for_update()
        )
    ).scalar_one_or_none()
    if delivery is None:
        raise ProblemError("not_found", "No such delivery")
    if delivery.status == PENDING:
        raise ProblemError("invalid_transition", "The delivery is still being attempted")
    endpoint = await session.get(WebhookEndpoint, delivery.endpoint_id)
    if endpoint is None or endpoint.deleted_at is not None:
        raise ProblemError("invalid_transition", "The endpoint was removed")
    event = (
        await session.execute(select(Event).where(col(Event.id) == delivery.event_id))
    ).scalar_one()
    reenabled = endpoint.disabled_at is not None
    if reenabled:  # an admin sending to a disabled endpoint vouches for it again
        endpoint.disabled_at, endpoint.failing_since = None, None
        session.add(endpoint)
    # One more attempt; the schedule's retries apply only if it has attempts left.
    delivery.status, delivery.completed_at, delivery.next_attempt_at = PENDING, None, utcnow()
    delivery.attempts = min(delivery.attempts, len(RETRY_SCHEDULE))
    session.add(delivery)
    events.queue_delivery(session, event, endpoint.id, delivery)
    await audit.record(
        session,
        action="webhook_delivery.redelivered",
        subject_type="webhook_delivery",
        subject_id=delivery.id,
        actor_type="admin",
        actor_id=admin_id,
        data={
            "event_id": event.id,
            "endpoint_id": endpoint.id,
            "client_id": delivery.client_id,
            "endpoint_reenabled": reenabled,
        },
    )
    return delivery, event
