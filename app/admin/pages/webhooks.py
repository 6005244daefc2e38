"""The admin web UI's webhooks page: clients' endpoints, failed and recent deliveries, and the
redeliver action (admins; audited). Same services as the admin API."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Query, Request, Response

from app.admin.pages.web import (
    DB,
    PREFIX,
    CheckedForm,
    Owner,
    Reader,
    page,
    pages_router,
    redirect,
    render,
)
from app.errors import ProblemError
from app.schemas.text import SafeStr
from app.services import clients, deliveries, webhooks

router = pages_router()

_CLIENT_ID = re.compile(r"^cli_[0-9a-f]{32}$")
_DELIVERY_ID = re.compile(r"^whd_[0-9a-f]{32}$")
ROWS = 50


@page(router, "/webhooks", summary="Webhook endpoints and deliveries")
async def webhooks_page(
    request: Request,
    _: Reader,
    db: DB,
    client_id: Annotated[SafeStr, Query(max_length=40)] = "",
    done: Annotated[SafeStr, Query(max_length=40)] = "",
) -> Response:
    client = client_id if _CLIENT_ID.match(client_id) else None
    return render(
        request,
        "webhooks.html",
        section="webhooks",
        client_id=client or "",
        names=await clients.names(db),
        endpoints=await webhooks.list_for(db, client),
        failed=await deliveries.recent(db, status="failed", client_id=client, limit=ROWS),
        attempts=await webhooks.attempts(db, client_id=client, limit=ROWS),
        redelivered=_DELIVERY_ID.match(done) is not None,
    )


@router.post("/webhook-deliveries/{delivery_id}/redeliver", summary="Redeliver (admins)")
async def redeliver(delivery_id: str, _: CheckedForm, ctx: Owner, db: DB) -> Response:
    if not _DELIVERY_ID.match(delivery_id):
        raise ProblemError("not_found", "There is no such delivery.")
    delivery, _event = await deliveries.redeliver(db, delivery_id, admin_id=ctx.admin.id)
    query = urlencode({"client_id": delivery.client_id, "done": delivery.id})
    return redirect(f"{PREFIX}/webhooks?{query}")
