"""The admin web UI's pages under ``/admin/``: sign-in, review queue, verifications, a
verification's record with its decisions, clients, the audit log, sign-out.

Thin like the API routers: parse the form or query, call the same services
(``app.services.admins``, ``review``, ``clients``), render a template. Pages show masked
values only; opening a record is an audited read under the bulk-access guard.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.types import DecoratedCallable
from sqlmodel import col, select
from starlette.background import BackgroundTask

from app.admin.web import (
    DB,
    PREFIX,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    STATUS_LABELS,
    AdminRoute,
    CheckedForm,
    Decider,
    Owner,
    Reader,
    RuntimeDep,
    SignedIn,
    clear_cookie,
    read_form,
    redirect,
    render,
    set_session_cookie,
    set_signin_cookie,
    signin_token,
    tokens_match,
)
from app.db import flush_erased_pages
from app.deps import AdminContext
from app.errors import ProblemError
from app.models import Admin, AuditEvent, Client, Status
from app.routers.admin import client_address
from app.services import admins, audit, client_keys, clients, review
from app.services.client_keys import Actor

router = APIRouter(prefix=PREFIX, route_class=AdminRoute, include_in_schema=False)

STATIC = Path(__file__).resolve().parent / "static"
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

_VERIFICATION_ID = re.compile(r"^ver_[0-9a-f]{32}$")
_CLIENT_ID = re.compile(r"^cli_[0-9a-f]{32}$")
_SUBJECT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ACTION = re.compile(r"^[a-z_.]{1,64}$")

Text = Annotated[str, Query(max_length=400)]


def page(path: str, summary: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """A GET page that also answers HEAD."""
    return router.api_route(path, methods=["GET", "HEAD"], summary=summary)


@dataclass(frozen=True)
class Flash:
    message: str
    verification_id: str | None


def _flash(done: str, vid: str) -> Flash | None:
    message = DONE_MESSAGES.get(done)
    if message is None:
        return None
    return Flash(message, vid if _VERIFICATION_ID.match(vid) else None)


async def _client_names(db: DB) -> dict[str, str]:
    rows = (await db.execute(select(Client.id, Client.name))).all()
    return {cid: name for cid, name in rows}


async def _actor_names(db: DB, ids: set[str | None]) -> dict[str, str]:
    """Usernames of the admins and names of the clients among audit events' actors."""
    names: dict[str, str] = {}
    admin_ids = [i for i in ids if i and i.startswith("adm_")]
    client_ids = [i for i in ids if i and i.startswith("cli_")]
    if admin_ids:
        query = select(Admin.id, Admin.username).where(col(Admin.id).in_(admin_ids))
        names.update({aid: name for aid, name in (await db.execute(query)).all()})
    if client_ids:
        query = select(Client.id, Client.name).where(col(Client.id).in_(client_ids))
        names.update({cid: name for cid, name in (await db.execute(query)).all()})
    return names


async def _audit_list_read(
    db: DB, ctx: AdminContext, *, view: str, status: str | None, client_id: str | None, rows: int
) -> None:
    """A page listing people's (masked) records is itself an audit event, as in the API."""
    await audit.record(
        db,
        action="admin.list_viewed",
        subject_type="admin",
        subject_id=ctx.admin.id,
        actor_type="admin",
        actor_id=ctx.admin.id,
        data={"view": view, "status": status, "client_id": client_id, "rows": rows},
    )


def _parse_day(value: str, what: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ProblemError(
            "invalid_request", f"The '{what}' date is not valid; use the date picker."
        ) from None


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


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


@page("", summary="The admin UI's entry")
async def entry() -> Response:
    return redirect(f"{PREFIX}/")


@page("/sign-in", summary="Sign-in form")
async def sign_in_form(request: Request, expired: Text = "", signed_out: Text = "") -> Response:
    notice = None
    if expired:
        notice = "Your session has ended. Please sign in again."
    elif signed_out:
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
    username = fields.get("username", "").strip()
    password = fields.get("password", "")
    totp = fields.get("totp", "").strip() or None
    if not (0 < len(username) <= 64 and 0 < len(password) <= 1024 and len(totp or "") <= 16):
        return _sign_in_page(
            request, status_code=422, error="Enter your username and your password."
        )
    try:
        signed = await admins.sign_in(
            db,
            runtime,
            username=username,
            password=password,
            totp=totp,
            address=client_address(request),
        )
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
    await admins.sign_out(db, ctx.session)
    response = redirect(f"{PREFIX}/sign-in?signed_out=1")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


# -- review queue and verifications ---------------------------------------------------------------


@page("/", summary="Review queue")
async def queue(
    request: Request,
    ctx: Reader,
    db: DB,
    cursor: Text = "",
    done: Text = "",
    v: Text = "",
) -> Response:
    counts = await review.counts_by_status(db)
    waiting = await review.list_verifications(
        db, status=Status.NEEDS_REVIEW, cursor=cursor or None, limit=QUEUE_PAGE
    )
    latest = await review.list_verifications(db, limit=10)
    rows = len(waiting.items) + len(latest.items)
    await _audit_list_read(db, ctx, view="queue", status=None, client_id=None, rows=rows)
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
        clients=await _client_names(db),
        flash=_flash(done, v),
    )


@page("/verifications", summary="Verifications, filtered")
async def verification_list(
    request: Request,
    ctx: Reader,
    db: DB,
    status: Text = "",
    client_id: Text = "",
    created_from: Text = "",
    created_to: Text = "",
    cursor: Text = "",
) -> Response:
    if status and status not in STATUS_LABELS:
        raise ProblemError("invalid_request", "That status filter is not one of the statuses.")
    if client_id and not _CLIENT_ID.match(client_id):
        raise ProblemError("invalid_request", "That client filter is not a client id.")
    day_from = _parse_day(created_from, "created from")
    day_to = _parse_day(created_to, "created to")
    results = await review.list_verifications(
        db,
        status=status or None,
        client_id=client_id or None,
        created_from=_start_of(day_from) if day_from else None,
        # The form's "to" day is inclusive; the service's bound is exclusive.
        created_to=_start_of(day_to + timedelta(days=1)) if day_to else None,
        cursor=cursor or None,
        limit=LIST_PAGE,
    )
    await _audit_list_read(
        db,
        ctx,
        view="verifications",
        status=status or None,
        client_id=client_id or None,
        rows=len(results.items),
    )
    filters = {
        "status": status,
        "client_id": client_id,
        "created_from": day_from.isoformat() if day_from else "",
        "created_to": day_to.isoformat() if day_to else "",
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
        clients=await _client_names(db),
    )


@page("/verifications/{verification_id}", summary="A verification's record (audited read)")
async def verification_detail(
    request: Request, verification_id: str, ctx: Reader, db: DB, runtime: RuntimeDep
) -> Response:
    if not _VERIFICATION_ID.match(verification_id):
        raise ProblemError("not_found", "There is no such verification.")
    detail = await review.open_record(db, runtime, ctx.admin.id, verification_id)
    v = detail.verification
    actions = [name for name, (allowed, _) in review.DECISIONS.items() if v.status in allowed]
    return render(
        request,
        "detail.html",
        section="verifications",
        v=v,
        checks=detail.checks,
        timeline=[review.event_out(e) for e in detail.timeline],
        actors=await _actor_names(db, {e.actor_id for e in detail.timeline}),
        client=detail.client,
        adult=detail.adult,
        actions=actions,
        labels=DECISION_LABELS,
        can_erase=v.status != Status.ERASED,
    )


def _reason(fields: dict[str, str]) -> str:
    return fields.get("reason", "")[:500]


@router.post("/verifications/{verification_id}/erase", summary="Erase (Art. 43), with a reason")
async def erase(
    verification_id: str, form: CheckedForm, ctx: Owner, db: DB, runtime: RuntimeDep
) -> Response:
    if not _VERIFICATION_ID.match(verification_id):
        raise ProblemError("not_found", "There is no such verification.")
    await review.erase(db, ctx.admin.id, verification_id, _reason(form))
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
    if action not in review.DECISIONS or not _VERIFICATION_ID.match(verification_id):
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


@page("/clients", summary="API clients and their keys")
async def client_list(request: Request, _: Reader, db: DB) -> Response:
    return await _clients_page(request, db)


@router.post("/clients", summary="Create a client (its key shown once)")
async def client_create(
    request: Request, form: CheckedForm, ctx: Owner, db: DB, runtime: RuntimeDep
) -> Response:
    name = form.get("name", "").strip()
    mode = form.get("mode", "")
    level = form.get("default_level", "L2")
    if not (0 < len(name) <= 200) or mode not in clients.MODES or level not in ("L1", "L2", "L3"):
        return await _clients_page(
            request,
            db,
            status_code=422,
            error="Give the client a name (up to 200 characters), a mode and a default level.",
        )
    client, api_key = await clients.create_client(
        db, runtime.master_key, name=name, mode=mode, default_level=level, actor_id=ctx.admin.id
    )
    # Shown in this answer only (Cache-Control: no-store); only its hash is kept.
    return await _clients_page(request, db, status_code=201, created=client, api_key=api_key)


def _reason_code(form: dict[str, str]) -> str:
    code = form.get("reason_code", "")
    if code not in client_keys.REASON_CODES:
        raise ProblemError("invalid_reason_code", "Choose a reason from the list.")
    return code


def _client_id(client_id: str) -> str:
    if not _CLIENT_ID.match(client_id):
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
    client = await db.get(Client, key.client_id)
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
    client = await db.get(Client, rotated.key.client_id)
    return await _clients_page(
        request,
        db,
        status_code=201,
        created=client,
        api_key=rotated.plain,
        notice=f"Key {rotated.previous.prefix}… keeps working for {hours} h, then stops.",
    )


# -- audit log ----------------------------------------------------------------------------------


@page("/audit", summary="The audit log, newest first")
async def audit_log(
    request: Request,
    _: Reader,
    db: DB,
    action: Text = "",
    subject_id: Text = "",
    before: Text = "",
) -> Response:
    if action and not _ACTION.match(action):
        raise ProblemError("invalid_request", "That action filter is not an audit action.")
    if subject_id and not _SUBJECT_ID.match(subject_id):
        raise ProblemError("invalid_request", "That subject filter is not an id.")
    if before and not before.isdigit():
        raise ProblemError("invalid_request", "That page marker is not valid.")
    before_seq = int(before) if before else None
    events = await review.audit_events(
        db,
        after_seq=before_seq,
        action=action or None,
        subject_id=subject_id or None,
        limit=AUDIT_PAGE,
    )
    known = sorted((await db.execute(select(AuditEvent.action).distinct())).scalars())
    kept = {k: val for k, val in {"action": action, "subject_id": subject_id}.items() if val}
    next_url = None
    if len(events) == AUDIT_PAGE and events[-1].seq > 1:
        next_url = f"{PREFIX}/audit?{urlencode({**kept, 'before': events[-1].seq})}"
    return render(
        request,
        "audit.html",
        section="audit",
        events=[review.event_out(e) for e in events],
        actors=await _actor_names(db, {e.actor_id for e in events}),
        actions=known,
        filters={"action": action, "subject_id": subject_id},
        filtered=bool(kept),
        next_url=next_url,
    )


# -- static files and everything else -------------------------------------------------------------

#: Read once at import: two small files, served without touching the disk per request.
_STATIC_FILES = {name: (STATIC / name).read_bytes() for name in STATIC_TYPES}


@page("/static/{name}", summary="The UI's stylesheet and icon")
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
