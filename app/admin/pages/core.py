"""The admin web UI's pages under ``/admin/``: sign-in, review queue, verifications, a
verification's record with its decisions, clients, the audit log, sign-out.

Thin like the API: parse the form or query, call the same services (``app.admin.auth``,
``app.services.review``, ``clients``, ``audit``), render a template. Pages show masked
values only; opening a record is an audited read under the bulk-access guard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from app.admin import auth
from app.admin.auth import SESSION_COOKIE
from app.admin.pages.web import (
    DB,
    PREFIX,
    SIGNIN_COOKIE,
    STATIC,
    STATUS_LABELS,
    VERIFICATION_ID,
    CheckedForm,
    Decider,
    Owner,
    Reader,
    SignedIn,
    clear_cookie,
    open_record,
    page,
    pages_router,
    read_form,
    redirect,
    render,
    set_session_cookie,
    set_signin_cookie,
    signin_token,
    tokens_match,
)
from app.db import flush_erased_pages
from app.deps import RuntimeDep, client_address
from app.errors import ProblemError
from app.models import Client, Status
from app.schemas.admin import REASON_CODES, ClientIn, ErasureIn, ReasonIn, SignInIn
from app.schemas.queries import (
    CLIENT_ID_PATTERN,
    UiAuditQuery,
    UiQueueQuery,
    UiSignInQuery,
    UiVerificationQuery,
)
from app.services import audit, client_keys, clients, costs, review
from app.services.client_keys import Actor
from app.services.review import Reason

router = pages_router()

STATIC_TYPES = {"admin.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}

QUEUE_PAGE = 25
LIST_PAGE = 50
AUDIT_PAGE = 50

#: Button labels of the decisions (which ones a record offers comes from review.DECISIONS).
DECISION_LABELS = {"approve": "Approve", "reject": "Reject", "revoke": "Revoke"}
DONE_MESSAGES = {
    "approve": "Approved: the verification is now verified.",
    "reject": "Rejected.",
    "revoke": "Revoked: its service tokens stopped working at once.",
    "erase": "Erased: nothing personal is left of that verification.",
}


@dataclass(frozen=True)
class Flash:
    message: str
    verification_id: str | None


def _flash(done: str | None, vid: str | None) -> Flash | None:
    message = DONE_MESSAGES.get(done or "")
    if message is None:
        return None
    return Flash(message, vid)


# -- sign-in and sign-out ------------------------------------------------------------------------


def _sign_in_page(
    request: Request, *, status_code: int = 200, error: str | None = None, notice: str | None = None
) -> HTMLResponse:
    token = signin_token(request)
    response = render(
        request,
        "sign_in.html",
        status_code=status_code,
        csrf_token=token,
        error=error,
        notice=notice,
    )
    set_signin_cookie(response, request, token)
    return response


@page(router, "", summary="The admin UI's entry")
async def entry() -> Response:
    return redirect(f"{PREFIX}/")


@page(router, "/sign-in", summary="Sign-in form")
async def sign_in_form(request: Request, q: Annotated[UiSignInQuery, Query()]) -> Response:
    notice = None
    if q.expired:
        notice = "Your session has ended. Please sign in again."
    elif q.signed_out:
        notice = "You have signed out."
    return _sign_in_page(request, notice=notice)


@router.post("/sign-in", summary="Sign in")
async def sign_in(request: Request, db: DB, runtime: RuntimeDep) -> Response:
    fields = await read_form(request)
    if not tokens_match(fields.get("csrf_token"), request.cookies.get(SIGNIN_COOKIE)):
        return _sign_in_page(
            request,
            status_code=403,
            error="The sign-in form had expired or did not come from this site. Please try again.",
        )
    try:
        # The same model as the API's sign-in: one set of rules for both faces.
        body = SignInIn(
            username=fields.get("username", "").strip(),
            password=fields.get("password", ""),
            totp=fields.get("totp", "").strip() or None,
            end_other_sessions=fields.get("end_other_sessions") == "true",
        )
    except ValidationError:
        return _sign_in_page(
            request, status_code=422, error="Enter your username and your password."
        )
    try:
        signed = await auth.sign_in_with(db, runtime, body, client_address(request))
    except ProblemError as exc:
        # Caught here so the page keeps its form; the failure's audit event is still committed.
        if exc.code == "rate_limited":
            refused = _sign_in_page(
                request,
                status_code=429,
                error="Too many failed sign-ins from here. Wait a while before trying again.",
            )
            if "Retry-After" in exc.headers:
                refused.headers["Retry-After"] = exc.headers["Retry-After"]
            return refused
        if exc.code != "invalid_credentials":
            raise
        return _sign_in_page(
            request,
            status_code=401,
            error="The username, password or one-time code is not correct.",
        )
    response = redirect(f"{PREFIX}/")
    set_session_cookie(response, request, signed.token)
    clear_cookie(response, request, SIGNIN_COOKIE)
    return response


@router.post("/sign-out", summary="Sign out")
async def sign_out(request: Request, _: CheckedForm, ctx: SignedIn, db: DB) -> Response:
    await auth.sign_out(db, ctx.session)
    response = redirect(f"{PREFIX}/sign-in?signed_out=1")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


# -- review queue and verifications ---------------------------------------------------------------


@page(router, "/", summary="Review queue")
async def queue(
    request: Request,
    ctx: Reader,
    db: DB,
    runtime: RuntimeDep,
    q: Annotated[UiQueueQuery, Query()],
) -> Response:
    counts = await review.counts_by_status(db)
    waiting = await review.list_verifications(
        db, status=Status.NEEDS_REVIEW, cursor=q.cursor, limit=QUEUE_PAGE
    )
    latest = await review.list_verifications(db, limit=10)
    # A page listing people's (masked) records is itself an audit event, as in the API.
    shown = [v.id for v in waiting.items + latest.items]
    await review.list_shown(
        db, runtime, ctx.admin.id, shown, view="queue", status=None, client_id=None
    )
    return render(
        request,
        "queue.html",
        section="queue",
        counts=[(status, counts.get(status, 0)) for status in STATUS_LABELS],
        waiting_count=counts.get(Status.NEEDS_REVIEW, 0),
        waiting=waiting.items,
        next_url=(
            f"{PREFIX}/?{urlencode({'cursor': waiting.next_cursor})}"
            if waiting.next_cursor
            else None
        ),
        latest=latest.items,
        clients=await clients.names(db),
        flash=_flash(q.done, q.v),
    )


@page(router, "/providers", summary="Provider cost per client per day, and breaker states")
async def providers(request: Request, ctx: Reader, db: DB, runtime: RuntimeDep) -> Response:
    daily = await costs.daily(db, runtime.settings, runtime.senders.live.name)
    return render(
        request,
        "providers.html",
        section="providers",
        costs=daily,
        breakers=sorted(runtime.verifiers.breaker_states().items()),
        clients=await clients.names(db),
    )


@page(router, "/verifications", summary="Verifications, filtered")
async def verification_list(
    request: Request,
    ctx: Reader,
    db: DB,
    runtime: RuntimeDep,
    q: Annotated[UiVerificationQuery, Query()],
) -> Response:
    # Parsed by the same rules as the API's filters; the "to" day is inclusive.
    results = await review.list_verifications(db, **q.filters(LIST_PAGE).model_dump())
    await review.list_shown(
        db,
        runtime,
        ctx.admin.id,
        [v.id for v in results.items],
        view="verifications",
        status=q.status,
        client_id=q.client_id,
    )
    filters = {
        "status": q.status or "",
        "client_id": q.client_id or "",
        "created_from": q.created_from.isoformat() if q.created_from else "",
        "created_to": q.created_to.isoformat() if q.created_to else "",
    }
    kept = {k: val for k, val in filters.items() if val}
    next_url = None
    if results.next_cursor:
        next_url = f"{PREFIX}/verifications?{urlencode({**kept, 'cursor': results.next_cursor})}"
    return render(
        request,
        "verifications.html",
        section="verifications",
        rows=results.items,
        filters=filters,
        filtered=bool(kept),
        next_url=next_url,
        clients=await clients.names(db),
    )


@page(router, "/verifications/{verification_id}", summary="A verification's record (audited read)")
async def verification_detail(
    request: Request, verification_id: str, ctx: Reader, db: DB, runtime: RuntimeDep
) -> Response:
    detail = await open_record(db, runtime, ctx, verification_id)
    v = detail.verification
    notes = review.review_notes(runtime, v)
    actions = [name for name, (allowed, _) in review.DECISIONS.items() if v.status in allowed]
    return render(
        request,
        "detail.html",
        section="verifications",
        v=v,
        checks=detail.checks,
        timeline=[audit.event_out(e) for e in detail.timeline],
        actors=await audit.actor_names(
            db, {e.actor_id for e in detail.timeline} | {n["admin_id"] for n in notes}
        ),
        notes=notes,
        client=detail.client,
        adult=detail.adult,
        actions=actions,
        labels=DECISION_LABELS,
        reason_codes=REASON_CODES,
        can_erase=v.status != Status.ERASED,
    )


def _given(fields: dict[str, str], *names: str) -> dict[str, str]:
    """The form's non-blank fields among ``names`` (an empty select or note means none)."""
    return {k: fields[k] for k in names if fields.get(k, "").strip()}


def _reason(fields: dict[str, str]) -> Reason:
    """A decision form's reason, through the API's model."""
    body = ReasonIn.model_validate(_given(fields, "reason_code", "note"))
    return Reason(body.code, body.note)


@router.post("/verifications/{verification_id}/erase", summary="Erase (Art. 43), with a reason")
async def erase(
    verification_id: str, form: CheckedForm, ctx: Owner, db: DB, runtime: RuntimeDep
) -> Response:
    if not VERIFICATION_ID.match(verification_id):
        raise ProblemError("not_found", "There is no such verification.")
    body = ErasureIn.model_validate(_given(form, "reason_code"))
    await review.erase(db, runtime, ctx.admin.id, verification_id, Reason(body.code))
    response = redirect(f"{PREFIX}/?{urlencode({'done': 'erase', 'v': verification_id})}")
    # After the commit and the answer: push the erased rows' old images out of SQLite's WAL.
    response.background = BackgroundTask(flush_erased_pages, runtime.engine)
    return response


@router.post("/verifications/{verification_id}/{action}", summary="Approve, reject or revoke")
async def decide(
    verification_id: str,
    action: str,
    form: CheckedForm,
    ctx: Decider,
    db: DB,
    runtime: RuntimeDep,
) -> Response:
    if action not in review.DECISIONS or not VERIFICATION_ID.match(verification_id):
        raise ProblemError("not_found", "There is no such page.")
    await review.decide(db, runtime, ctx.admin.id, verification_id, action, _reason(form))
    # Back to the queue rather than the record: re-opening it would count as another read.
    return redirect(f"{PREFIX}/?{urlencode({'done': action, 'v': verification_id})}")


# -- clients ------------------------------------------------------------------------------------


async def _clients_page(
    request: Request,
    db: DB,
    *,
    status_code: int = 200,
    created: Client | None = None,
    api_key: str | None = None,
    error: str | None = None,
    notice: str | None = None,
) -> Response:
    return render(
        request,
        "clients.html",
        status_code=status_code,
        section="clients",
        rows=await client_keys.list_clients(db),
        key_state=client_keys.key_state,
        reason_codes=client_keys.REASON_CODES,
        overlap_hours=request.app.state.runtime.settings.api_key_rotation_overlap_hours,
        created=created,
        api_key=api_key,
        error=error,
        notice=notice,
    )


@page(router, "/clients", summary="API clients and their keys")
async def client_list(request: Request, _: Reader, db: DB) -> Response:
    return await _clients_page(request, db)


@router.post("/clients", summary="Create a client (its key shown once)")
async def client_create(
    request: Request, form: CheckedForm, ctx: Owner, db: DB, runtime: RuntimeDep
) -> Response:
    try:
        body = ClientIn(
            name=form.get("name", "").strip(),
            mode=form.get("mode", ""),
            default_level=form.get("default_level", "L2"),
        )
    except ValidationError:
        return await _clients_page(
            request,
            db,
            status_code=422,
            error="Give the client a name (up to 200 characters), a mode and a default level.",
        )
    client, api_key = await clients.create_client(
        db,
        runtime.master_key,
        name=body.name,
        mode=body.mode,
        default_level=body.default_level,
        actor_id=ctx.admin.id,
    )
    # Shown in this answer only (Cache-Control: no-store); only its hash is kept.
    return await _clients_page(request, db, status_code=201, created=client, api_key=api_key)


def _reason_code(form: dict[str, str]) -> str:
    code = form.get("reason_code", "")
    if code not in client_keys.REASON_CODES:
        raise ProblemError("invalid_reason_code", "Choose a reason from the list.")
    return code


def _client_id(client_id: str) -> str:
    if not re.fullmatch(CLIENT_ID_PATTERN, client_id):
        raise ProblemError("not_found", "There is no such client.")
    return client_id


@router.post("/clients/{client_id}/keys", summary="Add an API key (shown once)")
async def key_add(
    request: Request, client_id: str, form: CheckedForm, ctx: Owner, db: DB, runtime: RuntimeDep
) -> Response:
    key, plain = await client_keys.add_key(
        db,
        runtime.master_key,
        _client_id(client_id),
        actor=Actor("admin", ctx.admin.id),
        reason_code=_reason_code(form),
    )
    client = (await client_keys.get_client(db, key.client_id)).client
    return await _clients_page(request, db, status_code=201, created=client, api_key=plain)


@router.post("/clients/{client_id}/{action}", summary="Disable or enable a client")
async def client_toggle(
    request: Request, client_id: str, action: str, form: CheckedForm, ctx: Owner, db: DB
) -> Response:
    if action not in ("disable", "enable"):
        raise ProblemError("not_found", "There is no such page.")
    client = await client_keys.set_disabled(
        db,
        _client_id(client_id),
        disabled=action == "disable",
        actor=Actor("admin", ctx.admin.id),
        reason_code=_reason_code(form),
    )
    notice = (
        f"{client.name} is disabled: its keys stopped working at once."
        if client.disabled
        else f"{client.name} is enabled again."
    )
    return await _clients_page(request, db, notice=notice)


@router.post("/clients/{client_id}/keys/{key_id}/{action}", summary="Revoke or rotate a key")
async def key_change(
    request: Request,
    client_id: str,
    key_id: str,
    action: str,
    form: CheckedForm,
    ctx: Owner,
    db: DB,
    runtime: RuntimeDep,
) -> Response:
    actor = Actor("admin", ctx.admin.id)
    if action == "revoke":
        revoked = await client_keys.revoke_key(
            db, key_id, client_id=_client_id(client_id), actor=actor, reason_code=_reason_code(form)
        )
        notice = f"Key {revoked.key.prefix}… is revoked: it stopped working at once."
        if revoked.usable_keys_left == 0:
            notice += " It was the client's last working key: the client has stopped."
        return await _clients_page(request, db, notice=notice)
    if action != "rotate":
        raise ProblemError("not_found", "There is no such page.")
    hours = form.get("overlap_hours", "").strip()
    if not (hours.isascii() and hours.isdigit() and int(hours) <= 24 * 30):
        raise ProblemError("invalid_request", "The overlap is a number of hours, 0 to 720.")
    rotated = await client_keys.rotate_key(
        db,
        runtime.master_key,
        key_id,
        client_id=_client_id(client_id),
        overlap_hours=int(hours),
        actor=actor,
        reason_code=_reason_code(form),
    )
    client = (await client_keys.get_client(db, rotated.key.client_id)).client
    return await _clients_page(
        request,
        db,
        status_code=201,
        created=client,
        api_key=rotated.plain,
        notice=f"Key {rotated.previous.prefix}… keeps working for {hours} h, then stops.",
    )


# -- audit log ----------------------------------------------------------------------------------


@page(router, "/audit", summary="The audit log, newest first")
async def audit_log(
    request: Request,
    ctx: Reader,
    db: DB,
    runtime: RuntimeDep,
    q: Annotated[UiAuditQuery, Query()],
) -> Response:
    events = await review.read_audit(db, runtime, ctx.admin.id, q.filters(AUDIT_PAGE))
    action, subject_id = q.action or "", q.subject_id or ""
    known = await audit.actions(db)
    kept = {k: val for k, val in {"action": action, "subject_id": subject_id}.items() if val}
    next_url = None
    if len(events) == AUDIT_PAGE and (events[-1].seq or 0) > 1:
        next_url = f"{PREFIX}/audit?{urlencode({**kept, 'before': events[-1].seq})}"
    return render(
        request,
        "audit.html",
        section="audit",
        events=[audit.event_out(e) for e in events],
        actors=await audit.actor_names(db, {e.actor_id for e in events}),
        actions=known,
        filters={"action": action, "subject_id": subject_id},
        filtered=bool(kept),
        next_url=next_url,
    )


# -- static files and everything else -------------------------------------------------------------

#: Read once at import: two small files, served without touching the disk per request.
_STATIC_FILES = {name: (STATIC / name).read_bytes() for name in STATIC_TYPES}


@page(router, "/static/{name}", summary="The UI's stylesheet and icon")
async def static(name: str) -> Response:
    if name not in _STATIC_FILES:
        raise ProblemError("not_found", "There is no such file.")
    return Response(_STATIC_FILES[name], media_type=STATIC_TYPES[name])


@router.api_route(
    "/{rest:path}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    summary="Not found",
)
async def not_found(rest: str) -> Response:
    """Unknown /admin paths get the UI's own 404 page (with its headers), not problem+json."""
    raise ProblemError("not_found", "There is no such page.")
