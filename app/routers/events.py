"""Integrator API: the client's events, and its webhook endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Query, Response

from app.deps import CurrentClient, RuntimeDep, SessionDep
from app.errors import problems
from app.models import WebhookEndpoint
from app.routers.idempotency import idempotent
from app.schemas.events import (
    AttemptList,
    AttemptOut,
    EndpointCreate,
    EndpointCreated,
    EndpointList,
    EndpointOut,
    EventOut,
    EventPage,
    PingOut,
    SecretOut,
)
from app.schemas.text import SafeStr
from app.services import events, webhooks

router = APIRouter(tags=["events"])


@router.get(
    "/v1/events",
    response_model=EventPage,
    summary="List the client's events of the last 30 days, oldest first",
    responses=problems("unauthorized", "not_found"),
)
async def list_events(
    client: CurrentClient,
    session: SessionDep,
    runtime: RuntimeDep,
    after: Annotated[SafeStr | None, Query(max_length=40, description="An event id")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> EventPage:
    rows, more = await events.page(
        session,
        client.id,
        after=after,
        limit=limit,
        retention_days=runtime.settings.event_retention_days,
    )
    return EventPage(
        data=[EventOut.model_validate(events.as_object(e)) for e in rows],
        has_more=more,
        next_after=rows[-1].id if rows else after,
    )


def _endpoint(endpoint: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(
        id=endpoint.id,
        url=endpoint.url,
        events=webhooks.event_types(endpoint),
        disabled=endpoint.disabled_at is not None,
        created_at=endpoint.created_at,
    )


@router.post(
    "/v1/webhook-endpoints",
    status_code=201,
    response_model=EndpointCreated,
    summary="Register a webhook endpoint; its signing secret is shown once",
    responses=problems(
        "invalid_webhook_url", "webhook_url_not_allowed", "unknown_event_type", "too_many_endpoints"
    ),
)
@idempotent
async def create_endpoint(
    body: EndpointCreate, client: CurrentClient, session: SessionDep, runtime: RuntimeDep
) -> EndpointCreated:
    types = None if body.events is None else [str(t) for t in body.events]
    created = await webhooks.create(session, runtime.settings, client, url=body.url, types=types)
    return EndpointCreated(**_endpoint(created.endpoint).model_dump(), secret=created.secret)


@router.get(
    "/v1/webhook-endpoints",
    response_model=EndpointList,
    summary="List the client's webhook endpoints",
)
async def list_endpoints(client: CurrentClient, session: SessionDep) -> EndpointList:
    return EndpointList(data=[_endpoint(e) for e in await webhooks.list_for(session, client.id)])


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}",
    response_model=EndpointOut,
    summary="Read a webhook endpoint",
    responses=problems("not_found"),
)
async def get_endpoint(endpoint_id: str, client: CurrentClient, session: SessionDep) -> EndpointOut:
    return _endpoint(await webhooks.get_for_client(session, client, endpoint_id))


@router.delete(
    "/v1/webhook-endpoints/{endpoint_id}",
    status_code=204,
    response_class=Response,
    summary="Remove a webhook endpoint; its queued deliveries are dropped",
    responses=problems("not_found"),
)
async def delete_endpoint(endpoint_id: str, client: CurrentClient, session: SessionDep) -> Response:
    await webhooks.delete(session, client, endpoint_id)
    return Response(status_code=204)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=SecretOut,
    summary="Give the endpoint a new secret; the old one keeps signing for 24 hours",
    responses=problems("not_found"),
)
@idempotent
async def rotate_secret(
    endpoint_id: str, client: CurrentClient, session: SessionDep, runtime: RuntimeDep
) -> SecretOut:
    secret = await webhooks.rotate(session, runtime.settings, client, endpoint_id)
    endpoint = await webhooks.get_for_client(session, client, endpoint_id)
    assert endpoint.previous_secret_until is not None  # set by the rotation
    return SecretOut(
        id=endpoint.id, secret=secret, previous_secret_expires_at=endpoint.previous_secret_until
    )


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/test",
    status_code=202,
    response_model=PingOut,
    summary="Send a ping event to the endpoint",
    responses=problems("not_found"),
)
@idempotent
async def test_endpoint(endpoint_id: str, client: CurrentClient, session: SessionDep) -> PingOut:
    event = await webhooks.ping(session, client, endpoint_id)
    return PingOut(event_id=event.id)


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=AttemptList,
    summary="Recent delivery attempts to the endpoint, newest first",
    responses=problems("not_found"),
)
async def list_deliveries(
    endpoint_id: str,
    client: CurrentClient,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> AttemptList:
    endpoint = await webhooks.get_for_client(session, client, endpoint_id)
    rows = await webhooks.attempts(session, endpoint_id=endpoint.id, limit=limit)
    return AttemptList(data=[attempt_out(r) for r in rows])


def attempt_out(row: webhooks.AttemptRow) -> AttemptOut:
    a = row.attempt
    return AttemptOut(
        id=a.id,
        delivery_id=a.delivery_id,
        event_id=row.event_id,
        event_type=row.event_type,
        attempted_at=a.attempted_at,
        status_code=a.status_code,
        latency_ms=a.latency_ms,
        error=a.error,
        response_excerpt=a.response_excerpt,
        next_retry_at=a.next_retry_at,
    )


_WEBHOOK_DOC = """Sent to each of the client's webhook endpoints subscribed to this type, as a JSON
event signed per Standard Webhooks: verify `webhook-signature` (`v1,<base64 HMAC-SHA-256 of
"{webhook-id}.{webhook-timestamp}.{body}">`, keyed with the endpoint's `whsec_` secret; two
signatures while a rotated secret overlaps) over the raw body, refuse timestamps more than five
minutes off, and de-duplicate on `webhook-id` (the event id; retries repeat it). Answer 2xx within
10 seconds; anything else is retried with back-off for about three days."""


def document_webhooks(app: FastAPI) -> None:
    """Describe every event type in the OpenAPI 3.1 ``webhooks`` section."""

    async def receive(
        event: EventOut,
        webhook_id: Annotated[str, Header(alias="webhook-id", description="The event id")],
        webhook_timestamp: Annotated[
            str, Header(alias="webhook-timestamp", description="Unix seconds of signing")
        ],
        webhook_signature: Annotated[
            str,
            Header(alias="webhook-signature", description="`v1,<base64>`, space-separated"),
        ],
    ) -> None:
        """Receives an event (documentation only)."""

    for event_type in events.EVENT_TYPES:
        app.webhooks.add_api_route(
            event_type,
            receive,
            methods=["POST"],
            summary=f"`{event_type}`",
            description=_WEBHOOK_DOC,
            status_code=204,
            response_class=Response,
            operation_id=f"webhook_{event_type.replace('.', '_')}",
            tags=["webhooks"],
        )
