"""Admin API: clients' webhook endpoints, deliveries and their attempts; redelivery (admins)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.admin.api.core import AUTH
from app.admin.auth import AnyAdmin, SuperAdmin
from app.deps import SessionDep
from app.errors import problems
from app.models import Event, WebhookDelivery, WebhookEndpoint
from app.routers.events import attempt_out
from app.schemas.events import AdminDeliveryList, AdminDeliveryOut, AdminEndpointOut, AttemptList
from app.schemas.text import SafeStr
from app.services import deliveries, webhooks

router = APIRouter(prefix="/v1/admin", tags=["admin"])

IdQuery = Annotated[SafeStr | None, Query(max_length=40)]


def endpoint_out(e: WebhookEndpoint) -> AdminEndpointOut:
    return AdminEndpointOut(
        id=e.id,
        client_id=e.client_id,
        url=e.url,
        events=webhooks.event_types(e),
        disabled=e.disabled_at is not None,
        failing_since=e.failing_since,
        created_at=e.created_at,
    )


def delivery_out(d: WebhookDelivery, event: Event) -> AdminDeliveryOut:
    return AdminDeliveryOut(
        id=d.id,
        client_id=d.client_id,
        endpoint_id=d.endpoint_id,
        event_id=d.event_id,
        event_type=event.type,
        status=d.status,
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        next_attempt_at=d.next_attempt_at,
        completed_at=d.completed_at,
        created_at=d.created_at,
    )


@router.get(
    "/webhook-endpoints",
    response_model=list[AdminEndpointOut],
    summary="Webhook endpoints of every client, or of one (no secrets)",
    responses=AUTH,
)
async def list_endpoints(
    _: AnyAdmin, session: SessionDep, client_id: IdQuery = None
) -> list[AdminEndpointOut]:
    return [endpoint_out(e) for e in await webhooks.list_for(session, client_id)]


@router.get(
    "/webhook-deliveries",
    response_model=AdminDeliveryList,
    summary="Recent webhook deliveries, newest first (failed ones by default)",
    responses=AUTH,
)
async def list_deliveries(
    _: AnyAdmin,
    session: SessionDep,
    client_id: IdQuery = None,
    status: Literal["pending", "succeeded", "failed"] = "failed",
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> AdminDeliveryList:
    rows = await deliveries.recent(session, status=status, client_id=client_id, limit=limit)
    return AdminDeliveryList(data=[delivery_out(d, e) for d, e in rows])


@router.get(
    "/webhook-attempts",
    response_model=AttemptList,
    summary="Recent webhook delivery attempts, newest first",
    responses=AUTH,
)
async def list_attempts(
    _: AnyAdmin,
    session: SessionDep,
    client_id: IdQuery = None,
    endpoint_id: IdQuery = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> AttemptList:
    rows = await webhooks.attempts(
        session, endpoint_id=endpoint_id, client_id=client_id, limit=limit
    )
    return AttemptList(data=[attempt_out(r) for r in rows])


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver",
    response_model=AdminDeliveryOut,
    status_code=202,
    summary="Send a finished delivery again, same event and webhook-id (admins; audited)",
    responses={**AUTH, **problems("not_found", "invalid_transition")},
)
async def redeliver(delivery_id: str, ctx: SuperAdmin, session: SessionDep) -> AdminDeliveryOut:
    delivery, event = await deliveries.redeliver(session, delivery_id, admin_id=ctx.admin.id)
    return delivery_out(delivery, event)
