"""Admin pages for incidents (Art. 25) and the person's rights (PIPL Art. 45): emergency
actions with a confirm step, the banner's details, and a printable data export.

Same plumbing and role rules as ``core`` (reading for every role, acting for admins only);
the same services as the JSON API (``app.services.emergency``, ``export``).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Query, Request, Response

from app.admin.pages.web import (
    DB,
    PREFIX,
    CheckedForm,
    Owner,
    Reader,
    open_record,
    page,
    pages_router,
    redirect,
    render,
)
from app.deps import RuntimeDep
from app.errors import ProblemError
from app.schemas.text import SafeStr
from app.services import audit, clients, emergency, export

router = pages_router()

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


async def _emergency_page(
    request: Request, db: DB, runtime: RuntimeDep, *, done: str = ""
) -> Response:
    history = await audit.events(db, action_prefix="emergency.", limit=50)
    return render(
        request,
        "emergency.html",
        section="emergency",
        measures=await emergency.in_force(db),
        history=[audit.event_out(e) for e in history],
        actions=ACTION_LABELS,
        reason_codes=emergency.REASON_CODES,
        providers=sorted(emergency.known_providers(runtime)),
        clients=list((await clients.names(db)).items()),
        done=ACTION_LABELS.get(done),
    )


@page(router, "/emergency", summary="Emergency measures (Art. 25)")
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
    await emergency.act_as_admin(
        db,
        runtime,
        ctx.admin.id,
        action=action,
        reason_code=choice["reason_code"],
        client_id=choice["client_id"],
        provider=choice["provider"],
    )
    return redirect(f"{PREFIX}/emergency?{urlencode({'done': action})}")


@page(router, "/verifications/{verification_id}/export", summary="Printable data export (Art. 45)")
async def export_page(
    request: Request, verification_id: str, ctx: Reader, db: DB, runtime: RuntimeDep
) -> Response:
    detail = await open_record(db, runtime, ctx, verification_id)
    doc = await export.build(db, detail.verification, actor_type="admin", actor_id=ctx.admin.id)
    return render(request, "export.html", section="verifications", doc=doc)
