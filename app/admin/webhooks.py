"""The admin web UI's webhooks page: clients' endpoints, failed and recent deliveries, and the
redeliver action (admins; audited). Same services as the admin API."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from sqlmodel import col, select

from app.admin.web import DB, PREFIX, AdminRoute, CheckedForm, Owner, Reader, redirect, render
from app.errors import ProblemError
from app.models import Client, WebhookEndpoint
from app.schemas.text import SafeStr
from app.services import deliveries, webhooks

router = APIRouter(prefix=PREFIX, route_class=AdminRoute, include_in_schema=False)

_CLIENT_ID = re.compile(r"^cli_[0-9a-f]{32}$")
_DELIVERY_ID = re.compile(r"^whd_[0-9a-f]{32}$")
ROWS = 50


@router.api_route("/webhooks", methods=["GET", "HEAD"], summary="Webhook endpoints and deliveries")
async def webhooks_page(
    request: Request,
    _: Reader,
    db: DB,
    client_id: Annotated[SafeStr, Query(max_length=40)] = "",
    done: Annotated[SafeStr, Query(max_length=40)] = "",
) -> Response:
    client = client_id if _CLIENT_ID.match(client_id) else None
    query = select(WebhookEndpoint).where(col(WebhookEndpoint.deleted_at).is_(None))
    if client is not None:
        query = query.where(col(WebhookEndpoint.client_id) == client)
    endpoints = list((await db.execute(query.order_by(col(WebhookEndpoint.created_at)))).scalars())
    names = {cid: name for cid, name in (await db.execute(select(Client.id, Client.name))).all()}
    return render(
        request,
        "webhooks.html",
        section="webhooks",
        client_id=client or "",
        names=names,
        endpoints=endpoints,
        failed=await deliveries.recent(db, status="failed", client_id=client, limit=ROWS),
        attempts=await webhooks.attempts(db, client_id=client, limit=ROWS),
        redelivered=_DELIVERY_ID.match(done) is not None,
    )


@router.post("/webhook-deliveries/{delivery_id}/redeliver", summary="Redeliver (admins)")
async def redeliver(delivery_id: str, _: CheckedForm, ctx: Owner, db: DB) -> Response:
    if not _DELIVERY_ID.match(delivery_id):
        raise ProblemError("not_found", "There is no such delivery.")
    delivery = await deliveries.redeliver(db, delivery_id, admin_id=ctx.admin.id)
    query = urlencode({"client_id": delivery.client_id, "done": delivery.id})
    return redirect(f"{PREFIX}/webhooks?{query}")
