"""Admin pages for incidents (Art. 25) and the person's rights (PIPL Art. 45): emergency
actions with a confirm step, the banner's details, and a printable data export.

Same plumbing and role rules as ``routes`` (reading for every role, acting for admins only);
the same services as the JSON API (``app.services.emergency``, ``export``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.types import DecoratedCallable
from sqlmodel import col, select

from app.admin.web import (
    DB,
    PREFIX,
    AdminRoute,
    CheckedForm,
    Owner,
    Reader,
    RuntimeDep,
    redirect,
    render,
)
from app.errors import ProblemError
from app.models import AuditEvent, Client
from app.schemas.text import SafeStr
from app.services import emergency, export, review

router = APIRouter(prefix=PREFIX, route_class=AdminRoute, include_in_schema=False)

_VERIFICATION_ID = re.compile(r"^ver_[0-9a-f]{32}$")
ACTION_LABELS = {
    "suspend-issuance": "Suspend issuance",
    "resume-issuance": "Resume issuance",
    "revoke-tokens": "Revoke every token",
    "quarantine-provider": "Quarantine a provider",
    "release-provider": "Release a provider",
}
EFFECTS = {
    "suspend-issuance": "New verifications and token issue will answer 503 issuance_suspended.",
    "resume-issuance": "New verifications and token issue will be accepted again.",
    "revoke-tokens": "Every token issued until now stops working at once; for all clients, "
    "the signing key is withdrawn from the JWKS. This cannot be undone.",
    "quarantine-provider": "The provider will not be called: its checks go to manual review, "
    "its messages are held.",
    "release-provider": "The provider will be called again.",
}


def page(path: str, summary: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    return router.api_route(path, methods=["GET", "HEAD"], summary=summary)


async def _emergency_page(
    request: Request, db: DB, runtime: RuntimeDep, *, done: str = ""
) -> Response:
    history = list(
        (
            await db.execute(
                select(AuditEvent)
                .where(col(AuditEvent.action).startswith("emergency."))
                .order_by(col(AuditEvent.seq).desc())
                .limit(50)
            )
        ).scalars()
    )
    clients = list((await db.execute(select(Client.id, Client.name))).all())
    return render(
        request,
        "emergency.html",
        section="emergency",
        measures=await emergency.in_force(db),
        history=[review.event_out(e) for e in history],
        actions=ACTION_LABELS,
        reason_codes=emergency.REASON_CODES,
        providers=sorted(emergency.known_providers(runtime)),
        clients=clients,
        done=ACTION_LABELS.get(done),
    )


@page("/emergency", summary="Emergency measures (Art. 25)")
async def emergency_page(
    request: Request,
    _: Reader,
    db: DB,
    runtime: RuntimeDep,
    done: Annotated[SafeStr, Query(max_length=40)] = "",
) -> Response:
    return await _emergency_page(request, db, runtime, done=done)


@router.post("/emergency", summary="Take an emergency action, after a confirm step")
async def emergency_action(
    request: Request, form: CheckedForm, ctx: Owner, db: DB, runtime: RuntimeDep
) -> Response:
    action = form.get("action", "")
    if action not in ACTION_LABELS:
        raise ProblemError("not_found", "There is no such emergency action.")
    choice: dict[str, str | None] = {
        "reason_code": form.get("reason_code") or None,
        "client_id": form.get("client_id") or None,
        "provider": form.get("provider") or None,
    }
    if form.get("confirm") != "yes":
        return render(
            request,
            "emergency_confirm.html",
            section="emergency",
            action=action,
            label=ACTION_LABELS[action],
            effect=EFFECTS[action],
            choice=choice,
        )
    await emergency.act(
        db,
        action=action,
        reason_code=choice["reason_code"],
        client_id=choice["client_id"],
        provider=choice["provider"],
        known_providers=emergency.known_providers(runtime),
        settings=runtime.settings,
        actor_type="admin",
        actor_id=ctx.admin.id,
    )
    if action == "revoke-tokens":
        runtime.keyring.forget_active()
    return redirect(f"{PREFIX}/emergency?{urlencode({'done': action})}")


@page("/verifications/{verification_id}/export", summary="Printable data export (Art. 45)")
async def export_page(
    request: Request, verification_id: str, ctx: Reader, db: DB, runtime: RuntimeDep
) -> Response:
    if not _VERIFICATION_ID.match(verification_id):
        raise ProblemError("not_found", "There is no such verification.")
    detail = await review.open_record(db, runtime, ctx.admin.id, verification_id)
    doc = await export.build(db, detail.verification, actor_type="admin", actor_id=ctx.admin.id)
    return render(request, "export.html", section="verifications", doc=doc)
