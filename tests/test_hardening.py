"""Regression tests for attacks on the service, one group per class of bug, each with a property
or exhaustive test that covers the class rather than the one request that found it."""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from app.admin import auth as admin_auth
from app.admin.auth import totp_for
from app.db import session_scope
from app.errors import is_input_refusal
from app.identity import InvalidField, parse_name
from app.main import create_app
from app.models import Verification
from app.ratelimit import RateLimits
from app.runtime import Runtime
from app.schemas.text import has_controls
from app.services import audit
from app.worker import Worker
from tests.conftest import auth
from tests.support import new_person
from tests.test_admin_api import PASSWORD, bearer, make_admin, needs_review, sign_in

#: Every C0 and C1 control, DEL, and a lone surrogate.
CONTROLS = [
    *(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]),
    *"\u200b\u200e\u2028\u2029\u202e\u2066\u2069\u2060\ufeff",
    "\ud800",
]
FUZZ = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def ui_sign_in(http: httpx.AsyncClient, username: str) -> str:
    """Sign in through the admin UI's form; return the session's CSRF token."""
    form = await http.get("/admin/sign-in")
    r = await http.post(
        "/admin/sign-in",
        data={"csrf_token": csrf_of(form), "username": username, "password": PASSWORD},
    )
    assert r.status_code == 303, r.text
    return csrf_of(await http.get("/admin/"))


async def seed_verifications(runtime: Runtime, client_id: str, n: int) -> list[str]:
    """``n`` finished verifications of ``client_id`` (masked values only), newest last."""
    start = datetime.now(UTC) - timedelta(minutes=n)
    rows = [
        Verification(
            client_id=client_id,
            external_user_id=f"seed-{i}",
            status="verified",
            level="L1",
            masked_name="张*",
            masked_id_number="110105********002X",
            masked_phone="138****8000",
            policy_version="2026-01",
            consent_at=start,
            created_at=start + timedelta(minutes=i),
            updated_at=start + timedelta(minutes=i),
        )
        for i in range(n)
    ]
    async with session_scope(runtime.sessions) as session:
        session.add_all(rows)
    return [v.id for v in rows]


@contextmanager
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """Collect the SQL statements the engine runs inside the block."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)


# -- 1, 2. Control characters: refused in decoded values, in one place ---------------------------


async def test_nul_escape_split_across_body_chunks_is_refused(
    http: httpx.AsyncClient, api_key: str
) -> None:
    """A JSON \\u0000 escape split across two body chunks is refused with 422, never stored."""
    body = json.dumps({**new_person(), "external_user_id": "ab\x00cd"}).encode()
    cut = body.index(b"\\u0000") + 3

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:cut]
        yield body[cut:]

    r = await http.post(
        "/v1/verifications",
        content=chunks(),
        headers=auth(api_key, **{"Content-Type": "application/json"}),
    )
    assert (r.status_code, r.json()["code"]) == (422, "invalid_external_user_id"), r.text
    async with session_scope(http_runtime(http).sessions) as session:
        assert (await session.execute(text("SELECT count(*) FROM verifications"))).scalar() == 0


def http_runtime(http: httpx.AsyncClient) -> Runtime:
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    runtime: Runtime = transport.app.state.runtime  # type: ignore[attr-defined]
    return runtime


async def test_admin_sign_in_form_with_percent_encoded_nul_is_422(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """username=ab%00cd in the admin UI's sign-in form is a 422 page, not a database error."""
    form = await http.get("/admin/sign-in")
    r = await http.post(
        "/admin/sign-in",
        content=f"csrf_token={csrf_of(form)}&username=ab%00cd&password=x".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 422, r.text


async def test_api_sign_in_with_nul_is_422(http: httpx.AsyncClient) -> None:
    """The JSON sign-in refuses a NUL in the username with 422 before any lookup."""
    r = await http.post("/v1/admin/sessions", json={"username": "ab\x00cd", "password": "x"})
    assert (r.status_code, r.json()["code"]) == (422, "invalid_request")


def test_database_data_exceptions_are_the_inputs_fault() -> None:
    """A database error of SQLSTATE class 22 (data exception) maps to a 4xx, others do not."""

    class Orig(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__("refused")
            self.sqlstate = sqlstate

    assert is_input_refusal(DBAPIError("SELECT 1", {}, Orig("22021")))
    assert is_input_refusal(DBAPIError("SELECT 1", {}, Orig("22003")))
    assert not is_input_refusal(DBAPIError("SELECT 1", {}, Orig("42P01")))


def api_routes(runtime: Runtime) -> list[tuple[str, APIRoute]]:
    """Every route of the app with its full path (included routers unfolded)."""
    out = []
    for context in iter_route_contexts(create_app(runtime=runtime).routes):
        if isinstance(context.original_route, APIRoute) and context.path:
            out.append((context.path, context.original_route))
    return out


def request_models(runtime: Runtime) -> list[tuple[str, type[BaseModel]]]:
    """Every pydantic model a route of the app parses a request body or query string with,
    plus the forms of the admin UI (which parse through the same models)."""
    from app.schemas.admin import ClientIn, ErasureIn, ReasonIn, SignInIn
    from app.schemas.codes import CodeSubmit
    from app.schemas.tokens import TokenIn

    found: dict[str, type[BaseModel]] = {}

    def models_in(annotation: Any) -> list[type[BaseModel]]:
        # A body may be a union of models (a discriminated ``id_type``), possibly Annotated.
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in get_args(annotation) for m in models_in(arg)]

    def visit(dependant: Any, route: str) -> None:
        for param in [*dependant.body_params, *dependant.query_params]:
            for model in models_in(param.field_info.annotation):
                found[model.__name__] = model
        for sub in dependant.dependencies:
            visit(sub, route)

    for _, route in api_routes(runtime):
        visit(route.dependant, route.path)
    # Parsed by hand (the UI's forms; the token endpoints, which take RFC form bodies and JSON;
    # the code check, which reads its body once the client is authenticated).
    for parsed in (SignInIn, ReasonIn, ErasureIn, ClientIn, TokenIn, CodeSubmit):
        found[parsed.__name__] = parsed
    nested: dict[str, type[BaseModel]] = {}
    for model in found.values():
        for field in model.model_fields.values():
            for inner in models_in(field.annotation):
                nested[inner.__name__] = inner
    return sorted({**found, **nested}.items())


def string_fields(model: type[BaseModel]) -> list[tuple[str, TypeAdapter[Any]]]:
    """The fields of ``model`` that take text, each with an adapter validating that field."""
    out = []
    for name, field in model.model_fields.items():
        adapter: TypeAdapter[Any] = TypeAdapter(field.rebuild_annotation())
        schema = json.dumps(adapter.json_schema())
        if '"string"' in schema and '"enum"' not in schema and '"const"' not in schema:
            out.append((name, adapter))
    return out


async def test_request_models_are_found(runtime: Runtime) -> None:
    """The enumeration below sees the models of the integrator API, the admin API and the UI."""
    names = {name for name, _ in request_models(runtime)}
    assert {
        "VerificationCreate",
        "NetworkIdentityCreate",
        "Consent",
        "CodeSubmit",
        "TokenIn",
        "SignInIn",
        "ReasonIn",
        "SearchIn",
        "ErasureIn",
        "ClientIn",
        "VerificationFilters",
        "AuditFilters",
        "UiVerificationQuery",
        "UiAuditQuery",
        "UiQueueQuery",
    } <= names


async def test_every_text_query_parameter_refuses_control_characters(runtime: Runtime) -> None:
    """Query and header parameters typed as text (outside the models above) refuse control
    characters too, in every route."""
    plain = []
    for path, route in api_routes(runtime):
        for param in route.dependant.query_params:
            annotation = param.field_info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                continue
            adapter: TypeAdapter[Any] = TypeAdapter(param.field_info.rebuild_annotation())
            if '"string"' in json.dumps(adapter.json_schema()):
                plain.append((path, param.name, adapter))
    assert plain, "no plain text query parameter found"
    taking = []
    for path, name, adapter in plain:
        try:
            adapter.validate_python("a\x01b")
        except ValidationError:
            continue
        taking.append(f"{path} ?{name}=")
    assert taking == []


async def test_every_request_string_refuses_control_characters(runtime: Runtime) -> None:
    """Any text with a control character, anywhere, in any string field of any request model
    (body, form or query, of every route) is refused by validation."""
    models = [(name, m) for name, m in request_models(runtime) if string_fields(m)]

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        model_name, model = data.draw(st.sampled_from(models))
        _, adapter = data.draw(st.sampled_from(string_fields(model)), label=model_name)
        value = data.draw(st.text(max_size=8)) + data.draw(st.sampled_from(CONTROLS))
        value += data.draw(st.text(max_size=8))
        with pytest.raises(ValidationError):
            adapter.validate_python(value)

    check()


def json_string_pointers(schema: dict[str, Any], components: dict[str, Any]) -> list[list[str]]:
    """Paths to the free-text string properties of a JSON request body schema."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    out: list[list[str]] = []
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf", [prop])
        for option in options:
            if "$ref" in option:
                out += [[name, *p] for p in json_string_pointers(option, components)]
            elif option.get("type") == "string" and "enum" not in option:
                out.append([name])
    return out


async def test_control_characters_in_any_json_field_of_any_route_are_4xx(
    http: httpx.AsyncClient, runtime: Runtime, api_key: str
) -> None:
    """Every JSON body field of every route, given a control character, answers 4xx naming
    that field, never 2xx and never 5xx."""
    token = str((await sign_in(http, (await make_admin(runtime, "admin"))[0])).json()["token"])
    schema = create_app(runtime=runtime).openapi()
    components = schema["components"]["schemas"]
    tried = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            body_schema = content.get("application/json", {}).get("schema")
            if body_schema is None:
                continue
            concrete = path.replace("{verification_id}", "ver_" + "0" * 32).replace(
                "{action}", "approve"
            )
            headers = bearer(token) if path.startswith("/v1/admin") else auth(api_key)
            for pointer in json_string_pointers(body_schema, components):
                body: dict[str, Any] = {}
                node = body
                for part in pointer[:-1]:
                    node = node.setdefault(part, {})
                node[pointer[-1]] = "a\x01b"
                r = await http.request(method.upper(), concrete, json=body, headers=headers)
                assert 400 <= r.status_code < 500, (method, path, pointer, r.status_code)
                pointers = [e["pointer"] for e in r.json().get("errors", [])]
                assert "/" + "/".join(pointer) in pointers, (method, path, pointer, r.text)
                tried += 1
    assert tried >= 10


QUERY_PROBES = [
    "/v1/sandbox/messages?verification_id=a%01b",
    "/v1/admin/verifications?status=a%01b",
    "/v1/admin/verifications?cursor=a%01b",
    "/v1/admin/verifications?client_id=a%7Fb",
    "/v1/admin/audit-events?action=a%01b",
    "/v1/admin/audit-events?subject_id=a%C2%85b",
    "/admin/verifications?status=a%01b",
    "/admin/verifications?cursor=a%1Fb",
    "/admin/audit?subject_id=a%01b",
    "/admin/audit?action=a%7Fb",
    "/admin/?cursor=a%01b",
    "/admin/?v=a%01b",
]


@pytest.mark.parametrize("path", QUERY_PROBES)
async def test_control_characters_in_query_values_are_422(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any, path: str
) -> None:
    """A control character in any query value is a 422: admin lists (API and UI), sandbox."""
    name, _ = await make_admin(runtime, "auditor")
    if path.startswith("/v1/sandbox"):
        _, key = await make_client("test")
        r = await http.get(path, headers=auth(key))
    elif path.startswith("/admin"):
        await ui_sign_in(http, name)
        r = await http.get(path)
    else:
        token = str((await sign_in(http, name)).json()["token"])
        r = await http.get(path, headers=bearer(token))
    assert r.status_code == 422, r.text


# -- 3. Admin UI query values parse through the API's models --------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/admin/audit?before=%C2%B2",
        "/admin/audit?before=%D9%A1%D9%A2",
        "/admin/audit?before=99999999999999999999",
        "/admin/audit?before=0",
        "/admin/audit?before=-1",
        "/admin/verifications?created_to=9999-12-31",
        "/admin/verifications?created_from=0000-01-01",
        "/admin/verifications?created_from=2026-02-30",
        "/admin/verifications?status=nope",
        "/admin/verifications?client_id=cli_x",
        "/admin/?done=nope",
    ],
)
async def test_admin_ui_query_values_out_of_range_are_422(
    http: httpx.AsyncClient, runtime: Runtime, path: str
) -> None:
    """Out-of-range or malformed UI query values answer a 422 page, never a 500."""
    await ui_sign_in(http, await make_admin_name(runtime, "auditor"))
    r = await http.get(path)
    assert r.status_code == 422, r.text


async def make_admin_name(runtime: Runtime, role: str) -> str:
    name, _ = await make_admin(runtime, role, f"{role}-{time.monotonic_ns()}")
    return name


@pytest.mark.parametrize(
    "query",
    [
        {"created_to": "9999-12-31T23:59:59-01:00"},
        {"created_from": "0001-01-01T00:00:00+01:00"},
        {"status": "nope"},
    ],
)
async def test_admin_api_filters_out_of_range_are_422(
    http: httpx.AsyncClient, runtime: Runtime, query: dict[str, str]
) -> None:
    """The API's list filters refuse what the UI refuses (one model for both)."""
    token = str((await sign_in(http, await make_admin_name(runtime, "auditor"))).json()["token"])
    r = await http.get("/v1/admin/verifications", params=query, headers=bearer(token))
    assert (r.status_code, r.json()["code"]) == (422, "invalid_request"), r.text


async def test_admin_ui_day_filters_still_work(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any
) -> None:
    """The UI's inclusive day filter, parsed through the shared model, finds today's rows."""
    client_id, _ = await make_client("test")
    ids = await seed_verifications(runtime, client_id, 2)
    await ui_sign_in(http, await make_admin_name(runtime, "auditor"))
    today = datetime.now(UTC).date().isoformat()
    r = await http.get("/admin/verifications", params={"created_to": today, "status": ""})
    assert r.status_code == 200
    assert all(vid in r.text for vid in ids)


# -- 4. Bulk-access guard: every record shown, by any path, per distinct record ----------------


async def test_listing_counts_towards_the_bulk_access_guard(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any
) -> None:
    """An auditor cannot list more distinct records in an hour than the guard allows."""
    client_id, _ = await make_client("test")
    cap = runtime.settings.admin_records_per_hour
    await seed_verifications(runtime, client_id, cap + 10)
    token = str((await sign_in(http, await make_admin_name(runtime, "auditor"))).json()["token"])
    r = await http.get("/v1/admin/verifications", params={"limit": 100}, headers=bearer(token))
    assert (r.status_code, r.json()["code"]) == (429, "bulk_access_blocked"), r.text


async def test_the_same_record_counts_once(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any
) -> None:
    """Re-reading records already shown this hour costs nothing more."""
    client_id, _ = await make_client("test")
    cap = runtime.settings.admin_records_per_hour
    ids = await seed_verifications(runtime, client_id, 3)
    token = str((await sign_in(http, await make_admin_name(runtime, "auditor"))).json()["token"])
    statuses = {
        (await http.get(f"/v1/admin/verifications/{ids[0]}", headers=bearer(token))).status_code
        for _ in range(cap + 5)
    }
    listed = await http.get("/v1/admin/verifications", headers=bearer(token))
    assert (statuses, listed.status_code) == ({200}, 200)


async def test_the_guard_stops_at_the_cap_and_reports(
    http: httpx.AsyncClient, runtime: Runtime, make_client: Any
) -> None:
    """Past the cap of distinct records, the admin is stopped with an audit event and a
    metric."""
    from app import metrics

    client_id, _ = await make_client("test")
    cap = runtime.settings.admin_records_per_hour
    ids = await seed_verifications(runtime, client_id, cap + 1)
    token = str((await sign_in(http, await make_admin_name(runtime, "auditor"))).json()["token"])
    before = metrics.BULK_ACCESS_BLOCKED.labels("record")._value.get()
    statuses = [
        (await http.get(f"/v1/admin/verifications/{vid}", headers=bearer(token))).status_code
        for vid in ids
    ]
    assert statuses == [200] * cap + [429]
    async with runtime.engine.connect() as conn:
        n = (
            await conn.execute(
                text("SELECT count(*) FROM audit_events WHERE action = 'admin.bulk_access_blocked'")
            )
        ).scalar()
    assert n == 1
    assert metrics.BULK_ACCESS_BLOCKED.labels("record")._value.get() == before + 1


#: Every path that shows an admin personal records (masked) or tells about them: (face, method,
#: path template, body). ``{new}`` is a record this admin has not been shown yet.
RECORD_PATHS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("api", "GET", "/v1/admin/verifications", None),
    ("api", "GET", "/v1/admin/verifications/{new}", None),
    ("api", "GET", "/v1/admin/audit-events?subject_id={new}", None),
    ("api", "GET", "/v1/admin/exports/{new}", None),
    ("api", "POST", "/v1/admin/verifications/{new}/revoke", {"reason_code": "legal_order"}),
    ("api", "POST", "/v1/admin/verifications/{new}/erase", {"reason_code": "legal_order"}),
    ("ui", "GET", "/admin/", None),
    ("ui", "GET", "/admin/verifications", None),
    ("ui", "GET", "/admin/verifications/{new}", None),
    ("ui", "GET", "/admin/audit?subject_id={new}", None),
    ("ui", "GET", "/admin/verifications/{new}/export", None),
    ("ui", "POST", "/admin/verifications/{new}/revoke", {"reason_code": "legal_order"}),
    ("ui", "POST", "/admin/verifications/{new}/erase", {"reason_code": "legal_order"}),
]
#: Admin reads that show no personal record: counts, clients, webhook deliveries (ids, types,
#: statuses), emergency measures, sign-in, assets.
NOT_RECORDS = {
    "/v1/admin/stats",
    "/v1/admin/clients",
    "/v1/admin/clients/{client_id}",
    "/v1/admin/webhook-endpoints",
    "/v1/admin/webhook-deliveries",
    "/v1/admin/webhook-attempts",
    "/v1/admin/emergency",
    "/admin/webhooks",
    "/admin/emergency",
    "/admin/providers",
    "/admin",
    "/admin/sign-in",
    "/admin/clients",
    "/admin/static/{name}",
    "/admin/{rest:path}",
}


def test_every_admin_read_path_is_classified(runtime: Runtime) -> None:
    """Each admin GET route is either counted by the guard (and tested below) or shows no
    personal record: a new read path fails here until it is classified."""
    counted = {
        re.sub(r"\?.*", "", path).replace("{new}", "{verification_id}")
        for _, _, path, _ in RECORD_PATHS
    }
    gets = {
        path
        for path, route in api_routes(runtime)
        if path.startswith(("/v1/admin", "/admin")) and "GET" in (route.methods or ())
    }
    assert gets - NOT_RECORDS <= counted, sorted(gets - NOT_RECORDS - counted)


@pytest.mark.parametrize(("face", "method", "path", "body"), RECORD_PATHS)
async def test_every_record_path_is_stopped_past_the_cap(
    http: httpx.AsyncClient,
    runtime: Runtime,
    make_client: Any,
    face: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    """Once an admin has been shown the cap of distinct records, every path that would show a
    new one is refused (429), whichever face and role."""
    client_id, _ = await make_client("test")
    cap = runtime.settings.admin_records_per_hour
    *opened, new = await seed_verifications(runtime, client_id, cap + 1)
    async with session_scope(runtime.sessions) as session:
        await audit.record(
            session,
            action="verification.created",
            subject_type="verification",
            subject_id=new,
            actor_type="client",
            actor_id=client_id,
            data={},
        )
    name = await make_admin_name(runtime, "admin")
    token = str((await sign_in(http, name)).json()["token"])
    for vid in opened:  # the cap of distinct records, each opened once
        r = await http.get(f"/v1/admin/verifications/{vid}", headers=bearer(token))
        assert r.status_code == 200
    url = path.format(new=new)
    if face == "api":
        r = await http.request(method, url, json=body, headers=bearer(token))
    else:
        csrf = await ui_sign_in(http, name)
        if method == "GET":
            r = await http.get(url)
        else:
            r = await http.post(url, data={"csrf_token": csrf, **(body or {})})
    assert r.status_code == 429, (url, r.status_code, r.text[:300])


# -- 5. TOTP codes are good once ----------------------------------------------------------------


async def test_a_totp_code_signs_in_once(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """The same one-time code cannot open a second session (RFC 6238 §5.2)."""
    name, secret = await make_admin(runtime, "admin", "totp-admin", totp=True)
    assert secret is not None
    code = totp_for(secret).generate(int(time.time())).decode()
    first = await sign_in(http, name, totp=code)
    replay = await sign_in(http, name, totp=code)
    assert (first.status_code, replay.status_code) == (201, 401), replay.text


async def test_a_code_of_an_earlier_step_is_refused_after_a_later_one(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """After a code of step n is used, the still-valid code of step n-1 is refused too."""
    name, secret = await make_admin(runtime, "admin", "totp-admin-2", totp=True)
    assert secret is not None
    now = int(time.time())
    current = totp_for(secret).generate(now).decode()
    previous = totp_for(secret).generate(now - 30).decode()
    assert (await sign_in(http, name, totp=current)).status_code == 201
    if previous != current:
        assert (await sign_in(http, name, totp=previous)).status_code == 401


async def test_signing_in_can_end_the_other_sessions(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """end_other_sessions ends every earlier session of the admin."""
    name, _ = await make_admin(runtime, "auditor", "many-sessions")
    old = str((await sign_in(http, name)).json()["token"])
    new = await sign_in(http, name, end_other_sessions=True)
    assert new.status_code == 201
    stale = await http.get("/v1/admin/stats", headers=bearer(old))
    fresh = await http.get("/v1/admin/stats", headers=bearer(new.json()["token"]))
    assert (stale.status_code, fresh.status_code) == (401, 200)


# -- 6. Names: a positive repertoire ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "\uffa0",
        "\u3164",
        "\u115f",
        "张\u3164三",
        "张三\ufe0f",
        "张三\U000e0100",
        "张\u034f三",
        "张\u17b4三",
        "\u0410lice",
        "张三Li",
        "김철수",
        "张\u0301三",
        "Ａlice",
    ],
)
def test_invisible_filler_and_mixed_script_names_are_refused(raw: str) -> None:
    """Fillers, variation selectors, CGJ, invisible vowels, other scripts and mixed scripts."""
    with pytest.raises(InvalidField):
        parse_name(raw)


async def test_a_filler_only_name_is_refused_over_http(
    http: httpx.AsyncClient, api_key: str
) -> None:
    """A name of only U+FFA0 is refused with 422 invalid_real_name."""
    r = await http.post(
        "/v1/verifications", json=new_person(real_name="\uffa0"), headers=auth(api_key)
    )
    assert (r.status_code, r.json()["code"]) == (422, "invalid_real_name")


def _allowed(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return (
        name.startswith(("CJK UNIFIED IDEOGRAPH-", "CJK COMPATIBILITY IDEOGRAPH-", "LATIN "))
        or ch in " \u00b7"
        or 0x300 <= ord(ch) < 0x370
    )


@FUZZ
@given(st.text(min_size=1, max_size=12))
def test_every_accepted_name_is_in_the_repertoire(raw: str) -> None:
    """Whatever is accepted holds only Han, Latin, accents, spaces and middle dots, in one
    script."""
    try:
        name = parse_name(raw)
    except InvalidField:
        return
    assert all(_allowed(ch) for ch in name)
    scripts = {unicodedata.name(c).startswith("CJK") for c in name if c.isalpha()}
    assert len(scripts) == 1


# -- 7. Reasons: codes in the audit trail, notes sealed and erased --------------------------------


async def test_free_text_reason_is_refused(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """A free-text reason naming a person is refused and nothing reaches the audit trail."""
    vid = await needs_review(http, api_key, worker)
    token = str((await sign_in(http, await make_admin_name(runtime, "reviewer"))).json()["token"])
    r = await http.post(
        f"/v1/admin/verifications/{vid}/reject",
        json={"reason": "user 欧阳靖雯 asked"},
        headers=bearer(token),
    )
    assert (r.status_code, r.json()["code"]) == (422, "reason_required")
    async with runtime.engine.connect() as conn:
        dump = str((await conn.execute(text("SELECT data FROM audit_events"))).all())
    assert "欧阳靖雯" not in dump


async def test_a_note_is_sealed_with_the_verification_and_erased_with_it(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """The audit event keeps the reason code only; the note is sealed, readable by admins on
    the record, and wiped by erasure."""
    vid = await needs_review(http, api_key, worker)
    token = str((await sign_in(http, await make_admin_name(runtime, "admin"))).json()["token"])
    note = "user 欧阳靖雯 asked, ID 3301O6l985O6l2789O"
    r = await http.post(
        f"/v1/admin/verifications/{vid}/reject",
        json={"reason_code": "identity_mismatch", "note": note},
        headers=bearer(token),
    )
    assert r.status_code == 200, r.text
    async with runtime.engine.connect() as conn:
        audit_dump = str((await conn.execute(text("SELECT data FROM audit_events"))).all())
        row_dump = str(
            (
                await conn.execute(text("SELECT * FROM verifications WHERE id = :v"), {"v": vid})
            ).all()
        )
    assert "identity_mismatch" in audit_dump
    assert "欧阳靖雯" not in audit_dump + row_dump
    assert "3301O6" not in audit_dump + row_dump
    detail = (await http.get(f"/v1/admin/verifications/{vid}", headers=bearer(token))).json()
    assert [(n["reason_code"], n["note"]) for n in detail["notes"]] == [("identity_mismatch", note)]
    assert "欧阳靖雯" not in json.dumps(detail["timeline"], ensure_ascii=False)
    erase = await http.post(
        f"/v1/admin/verifications/{vid}/erase",
        json={"reason_code": "person_request"},
        headers=bearer(token),
    )
    assert erase.status_code == 200, erase.text
    async with runtime.engine.connect() as conn:
        sealed = (
            await conn.execute(
                text("SELECT review_notes_sealed FROM verifications WHERE id = :v"), {"v": vid}
            )
        ).scalar()
    assert sealed is None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/admin/verifications/search",
            {"id_number": "11010519491231002X", "reason_code": "legal_order", "note": "x"},
        ),
        (
            "/v1/admin/verifications/search",
            {"id_number": "11010519491231002X", "reason": "police request 42"},
        ),
        ("/v1/admin/verifications/{vid}/approve", {"reason_code": "other"}),
        ("/v1/admin/verifications/{vid}/erase", {"reason_code": "person_request", "note": "x"}),
    ],
)
async def test_reasons_that_would_carry_free_text_where_it_cannot_be_erased_are_refused(
    http: httpx.AsyncClient,
    api_key: str,
    worker: Worker,
    runtime: Runtime,
    path: str,
    body: dict[str, Any],
) -> None:
    """Searches and erasures keep no note; 'other' needs one; free text is not a code."""
    vid = await needs_review(http, api_key, worker)
    token = str((await sign_in(http, await make_admin_name(runtime, "admin"))).json()["token"])
    r = await http.post(path.format(vid=vid), json=body, headers=bearer(token))
    assert r.status_code == 422, r.text
    assert r.json()["code"] in {"reason_required", "unknown_field"}


# -- 8. external_user_id is not personal data ------------------------------------------------------


@pytest.mark.parametrize(
    "external_user_id",
    [
        "11010519491231002X",
        "11010519491231002x",
        "１１０１０５１９４９１２３１００２Ｘ",
        "u-110105-19491231-002X",
        "110105491231002",
        "13800138000",
        "+86 138 0013 8000",
        "0086-138-0013-8000",
        "user_13800138000",
    ],
)
async def test_external_user_id_may_not_be_an_id_number_or_phone(
    http: httpx.AsyncClient, api_key: str, external_user_id: str
) -> None:
    """An external_user_id holding an ID number or phone number is refused, saying why."""
    r = await http.post(
        "/v1/verifications",
        json=new_person(external_user_id=external_user_id),
        headers=auth(api_key),
    )
    assert (r.status_code, r.json()["code"]) == (422, "invalid_external_user_id"), r.text
    assert "must not" in r.json()["detail"]
    assert external_user_id not in r.text


@pytest.mark.parametrize("external_user_id", ["42", "user-42", "ord_2026120700001", "a" * 200])
async def test_ordinary_external_user_ids_are_accepted(
    http: httpx.AsyncClient, api_key: str, external_user_id: str
) -> None:
    """Opaque ids, short numbers and order-like ids are still accepted."""
    r = await http.post(
        "/v1/verifications",
        json=new_person(external_user_id=external_user_id),
        headers=auth(api_key),
    )
    assert r.status_code == 201, r.text


# -- 9. The per-phone SMS limit tells no tenant about another ---------------------------------


async def test_another_clients_send_does_not_limit_this_client(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """Client B can verify a phone client A has just sent a code to; A's own limit holds."""
    _, key_a = await make_client("test", level="L2", name="A")
    _, key_b = await make_client("test", level="L2", name="B")
    person = new_person()
    a = await http.post("/v1/verifications", json=person, headers=auth(key_a))
    assert a.status_code == 201, a.text
    await http_worker_run(http)
    b = await http.post(
        "/v1/verifications", json={**person, "external_user_id": "b-1"}, headers=auth(key_b)
    )
    again = await http.post(
        "/v1/verifications", json={**person, "external_user_id": "a-2"}, headers=auth(key_a)
    )
    assert b.status_code == 201, b.text
    assert (again.status_code, again.json()["code"]) in {
        (429, "rate_limited"),
        (409, "identity_in_use"),
    }


async def http_worker_run(http: httpx.AsyncClient) -> None:
    await Worker(http_runtime(http)).run_until_idle()


async def test_the_platform_daily_cap_answers_like_the_clients_own(runtime: Runtime) -> None:
    """The cross-client daily cap refuses with the same Retry-After as the client's own daily
    limit: the next midnight, never a time derived from another client's send."""
    # The service's limits (shared storage), with only the daily limit per client, so that one
    # client can reach it within this test.
    limits = RateLimits(runtime.settings.model_copy(update={"sms_phone_limits": "10/day"}))
    phone = f"phone-bidx-platform-{time.monotonic_ns()}"
    cap = runtime.settings.sms_phone_platform_per_day
    for i in range(cap):
        assert await limits.hit_sms("test", f"cli_other{i}", phone) is None
    refused = await limits.check_sms("test", "cli_me", phone)
    zone = ZoneInfo(runtime.settings.legal_timezone)
    now = datetime.now(zone)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), zone)
    assert refused is not None
    assert abs(refused.retry_after - (midnight - now).total_seconds()) <= 2
    own_phone = f"phone-bidx-own-{time.monotonic_ns()}"
    for _ in range(10):
        assert await limits.hit_sms("test", "cli_me", own_phone) is None
    own = await limits.check_sms("test", "cli_me", own_phone)
    await limits.close()
    assert own is not None
    assert abs(own.retry_after - refused.retry_after) <= 2


# -- 10. Failed API-key guesses are limited per address, without the database ----------------------


async def test_api_key_guesses_are_limited_per_address(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """After the allowed failures, further guesses get 429 without any SQL statement."""
    allowed = min(item.amount for item in runtime.limits.auth_failures)
    for i in range(allowed):
        r = await http.get("/v1/verifications/ver_x", headers=auth(f"rn_test_guess{i:04d}"))
        assert r.status_code == 401
    with statements(runtime) as seen:
        r = await http.get("/v1/verifications/ver_x", headers=auth("rn_test_guess-next"))
    assert (r.status_code, r.json()["code"]) == (429, "rate_limited")
    assert "Retry-After" in r.headers
    assert seen == []


async def test_admin_session_token_guesses_are_limited_too(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Guessing admin session tokens is limited by the same per-address counter."""
    allowed = min(item.amount for item in runtime.limits.auth_failures)
    for i in range(allowed):
        r = await http.get("/v1/admin/stats", headers=bearer(f"guess-{i}"))
        assert r.status_code == 401
    r = await http.get("/v1/admin/stats", headers=bearer("guess-next"))
    assert (r.status_code, r.json()["code"]) == (429, "rate_limited")


async def test_valid_keys_keep_working_for_other_addresses(runtime: Runtime, api_key: str) -> None:
    """The limit is per address: a guesser elsewhere does not lock a client out."""
    allowed = min(item.amount for item in runtime.limits.auth_failures)
    for _ in range(allowed):
        await runtime.limits.record_auth_failure("203.0.113.9")
    app = create_app(runtime=runtime)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        r = await client.get("/v1/verifications/ver_x", headers=auth(api_key))
    assert r.status_code == 404


def test_controls_helper_matches_the_schema_pattern() -> None:
    """The OpenAPI pattern and the validator refuse the same characters (lone surrogates, which
    no UTF-8 text can carry, only the validator)."""
    from app.schemas.text import NO_CONTROLS_PATTERN

    pattern = re.compile(NO_CONTROLS_PATTERN)
    for ch in [*CONTROLS[:-1], "a", "张", "\u00a0", "\u3000", "\u2027", "\u2070"]:
        assert has_controls(ch) == (pattern.fullmatch(ch) is None)


def test_totp_step_names_the_time_step_of_a_code() -> None:
    """totp_step gives the step a code belongs to, which sign-in records."""
    secret = b"k" * 20
    now = 1_800_000_000
    code = totp_for(secret).generate(now).decode()
    assert admin_auth.totp_step(secret, code, now) == now // 30


async def test_the_ui_decision_form_takes_a_code_and_shows_the_note_on_the_record(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """A decision made in the UI stores its code in the audit trail and shows its note on the
    record page only."""
    vid = await needs_review(http, api_key, worker)
    csrf = await ui_sign_in(http, await make_admin_name(runtime, "reviewer"))
    r = await http.post(
        f"/admin/verifications/{vid}/reject",
        data={"csrf_token": csrf, "reason_code": "identity_mismatch", "note": "photo differs"},
    )
    assert r.status_code == 303, r.text
    page = await http.get(f"/admin/verifications/{vid}")
    assert "photo differs" in page.text
    async with runtime.engine.connect() as conn:
        dump = str((await conn.execute(text("SELECT data FROM audit_events"))).all())
    assert "photo differs" not in dump
    assert "identity_mismatch" in dump
