"""Notices to the operator: a signed POST for what a person must look at now.

A bulk-access block and every emergency action are written to the audit trail and counted in
metrics; with ``REALNAME_OPERATOR_WEBHOOK_URL`` set they are also queued, in the same
transaction, as an outbox job that the worker POSTs to that URL, signed per Standard Webhooks
with ``REALNAME_OPERATOR_WEBHOOK_SECRET`` (the scheme clients' webhooks and the SMS gateway
use), and retries until a 2xx. A notice carries ids, codes and counts, never personal data:

    {"id": "ntc_…", "type": "admin.bulk_access_blocked", "created_at": "…",
     "data": {"admin_id": "adm_…", "what": "list", "records": 51, "limit_per_hour": 50,
              "audit_seq": 812}}
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Final

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import OutboxJob
from app.models._types import utcnow
from app.services import outbox
from app.settings import Settings
from app.webhooks import signing

JOB_KIND: Final = "operator_notice"
#: A notice that is not answered 2xx within this many seconds is tried again.
TIMEOUT_SECONDS: Final = 10.0


def enabled(settings: Settings) -> bool:
    return bool(settings.operator_webhook_url and settings.operator_webhook_secret)


def queue(session: AsyncSession, settings: Settings, type: str, data: dict[str, Any]) -> None:
    """Queue a notice of ``type`` in the caller's transaction (nothing when none is set up)."""
    if not enabled(settings):
        return
    notice = {
        "id": f"ntc_{secrets.token_hex(16)}",
        "type": type,
        "created_at": utcnow().isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    outbox.queue(
        session, OutboxJob(kind=JOB_KIND, payload=json.dumps(notice, separators=(",", ":")))
    )


async def deliver(settings: Settings, client: httpx.AsyncClient, payload: str) -> bool:
    """POST one notice; True when the operator's endpoint answered 2xx."""
    assert settings.operator_webhook_url is not None
    assert settings.operator_webhook_secret is not None
    body = payload.encode("utf-8")
    key = signing.key_of(settings.operator_webhook_secret.get_secret_value())
    headers = {
        "Content-Type": "application/json",
        **signing.headers(json.loads(payload)["id"], body, [key]),
    }
    try:
        response = await client.post(
            settings.operator_webhook_url,
            content=body,
            headers=headers,
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
        )
    except httpx.HTTPError:
        return False
    return response.is_success
