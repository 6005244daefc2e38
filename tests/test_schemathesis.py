"""Schemathesis against the live OpenAPI schema: every operation, every built-in check.

The schema is fetched from the app itself (``GET /openapi.json``) and every operation in it, the
admin API included, is fuzzed in process with valid and invalid input. Requests carry an
integrator test-mode API key (``/v1/...``) or an admin session token with the ``admin`` role
(``/v1/admin/...``), both made through the service layer in the test database.

``test_stateful_workflows`` then follows the links between operations. The schema declares the
links from a created verification to the integrator operations on its id (``app.openapi``);
schemathesis adds those it infers from response schemas and path parameters (open, review or
erase it through the admin API), and ``test_links_are_inferred`` keeps that from silently
going away.

How the app is reached: schemathesis' ASGI client runs an app on an event loop in a thread of
its own, but the test ``runtime`` (database pool, rate-limit storage, HTTP client) belongs to the
pytest-asyncio session loop, and asyncpg or Redis connections cannot move between loops. So the
app is wrapped in :class:`LoopBridge`, which replays each request on the session loop (idle
while a synchronous test runs) and hands the recorded response back to schemathesis.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TypeVar

import anyio.to_thread
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from requests.structures import CaseInsensitiveDict
from schemathesis import Case, GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.transport import Response
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from stdnum.cn import ric

from app.admin import auth as admin_auth
from app.db import session_scope
from app.main import create_app
from app.models._types import utcnow
from app.runtime import Runtime
from app.settings import Settings
from app.worker import Worker
from tests.conftest import TEST_BLIND_KEYS, TEST_SECRET

T = TypeVar("T")
ApiCase = Case[Any]

ADMIN_USERNAME = "schemathesis-admin"
ADMIN_PASSWORD = "schemathesis admin password"

#: Bounds that keep the module well under two minutes.
FUZZ_SETTINGS = settings(
    max_examples=30,
    derandomize=True,  # the same examples on every run: CI is deterministic
    database=None,  # no example database written to the work tree
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
STATEFUL_SETTINGS = settings(FUZZ_SETTINGS, max_examples=60, stateful_step_count=10)
REQUEST_TIMEOUT = 30.0


# -- the event-loop bridge -------------------------------------------------------------------------


def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the (idle) session loop, from a thread that is not running a loop."""
    return loop.run_until_complete(coro)


@dataclass
class FuzzContext:
    """What the running test made (an API key, an admin session) and what it can do."""

    api_key: str
    admin_token: str
    new_admin_token: Callable[[], Awaitable[str]]
    run_worker: Callable[[], Coroutine[Any, Any, int]]
    reset_limits: Callable[[], Coroutine[Any, Any, None]]
    lift_emergency: Callable[[], Coroutine[Any, Any, None]]
    #: Empty the process's caches (a scenario must not depend on what earlier ones cached).
    forget: Callable[[], None]


#: What generated cases carry in ``Authorization``; the bridge swaps in the running test's
#: credential. (Cases of the coverage phase are built at collection, before any fixture runs,
#: and every test starts from an empty database: keys and sessions are made per test.)
INTEGRATOR_KEY = "Bearer schemathesis.integrator-api-key"
ADMIN_SESSION = "Bearer schemathesis.admin-session"
FRESH_ADMIN_SESSION = "Bearer schemathesis.fresh-admin-session"


class LoopBridge:
    """The ASGI app schemathesis talks to: it replays each request to the bound app on the
    session loop. Until a test binds the app (``bind``), it serves the schema only, straight
    from a runtime-less app (``/openapi.json`` touches no database)."""

    def __init__(self, schema_app: ASGIApp) -> None:
        self.schema_app = self.app = schema_app
        self.loop: asyncio.AbstractEventLoop | None = None
        self.context: FuzzContext | None = None

    def bind(self, app: ASGIApp, loop: asyncio.AbstractEventLoop, context: FuzzContext) -> None:
        self.app, self.loop, self.context = app, loop, context

    def unbind(self) -> None:
        self.app, self.loop, self.context = self.schema_app, None, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # The shared runtime is the `runtime` fixture's to start and close, not the app's.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        loop = self.loop
        if loop is None:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        # The session loop runs in a worker thread: this thread runs schemathesis' loop.
        replies = await anyio.to_thread.run_sync(
            lambda: run_on(loop, self._serve(dict(scope), bytes(body)))
        )
        for reply in replies:
            await send(reply)

    async def _serve(self, scope: Scope, body: bytes) -> list[Message]:
        """One request to the bound app, on the session loop: its response messages, in order."""
        scope["headers"] = [
            (name, await self._credential(value) if name == b"authorization" else value)
            for name, value in scope["headers"]
        ]
        replies: list[Message] = []
        done = asyncio.Event()
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            replies.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done.set()

        # A hung request fails its test instead of stalling the run (nothing here cancels it).
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await self.app(scope, receive, send)
        return replies

    async def _credential(self, value: bytes) -> bytes:
        context = self.context
        assert context is not None
        placeholder = value.decode("latin-1")
        if placeholder == INTEGRATOR_KEY:
            token = context.api_key
        elif placeholder == ADMIN_SESSION:
            token = context.admin_token
        elif placeholder == FRESH_ADMIN_SESSION:
            token = await context.new_admin_token()
        else:
            return value  # generated or deliberately invalid credentials go through as they are
        return f"Bearer {token}".encode()


def _schema_only_app() -> ASGIApp:
    return create_app(
        Settings(
            env="test",
            database_url="sqlite://",  # never connected: no runtime is built for this app
            secret_key=TEST_SECRET,
            blind_index_keys=TEST_BLIND_KEYS,
            _env_file=None,
        )
    )


BRIDGE = LoopBridge(_schema_only_app())
schema = schemathesis.openapi.from_asgi("/openapi.json", BRIDGE)
#: As served (schemathesis adds the links it infers to ``schema.raw_schema``).
SERVED_SCHEMA = copy.deepcopy(schema.raw_schema)
# The service refuses NUL anywhere in a request (400, "NUL characters are not accepted": text
# columns cannot hold it), which a JSON Schema string cannot express: generate no NUL bytes
# (schemathesis' own switch for such servers, `--generation-allow-x00=false` in the CLI).
schema.config.generation.update(allow_x00=False)


@schema.auth(refresh_interval=None)
class _Auth:
    """The API key on integrator routes, an admin session token (role admin) on admin routes."""

    def get(self, case: ApiCase, context: Any) -> str | None:
        if not case.operation.definition.raw.get("security"):
            return None  # public: the policies, JWKS, probes, sign-in
        if case.operation.path == "/v1/admin/sessions/current":
            return FRESH_ADMIN_SESSION  # signing out ends the session: a new one for each call
        if case.operation.path.startswith("/v1/admin/"):
            return ADMIN_SESSION
        return INTEGRATOR_KEY

    def set(self, case: ApiCase, data: str, context: Any) -> None:
        set_header(case, "Authorization", data)


def set_header(case: ApiCase, name: str, value: str) -> None:
    headers: CaseInsensitiveDict[Any] = CaseInsensitiveDict(case.headers or {})
    headers[name] = value
    case.headers = headers


# -- fixtures -------------------------------------------------------------------------------------


async def _admin_session(runtime: Runtime) -> str:
    async with session_scope(runtime.sessions) as session:
        signed = await admin_auth.sign_in(
            session,
            runtime,
            username=ADMIN_USERNAME,
            password=ADMIN_PASSWORD,
            totp=None,
            address="schemathesis-fixture",  # not the fuzzer's address, whose failures count
        )
    return signed.token


@pytest.fixture
async def session_loop() -> asyncio.AbstractEventLoop:
    """The pytest-asyncio session loop, which owns the runtime's connections."""
    return asyncio.get_running_loop()


@pytest.fixture
async def fuzz_context(runtime: Runtime, make_client: Any) -> FuzzContext:
    # L1: a verification is `verified` after the registry check; a body may still ask for L2/L3.
    _, api_key = await make_client("test", level="L1", name="schemathesis")
    async with session_scope(runtime.sessions) as session:
        await admin_auth.create_admin(
            session, runtime, username=ADMIN_USERNAME, password=ADMIN_PASSWORD, role="admin"
        )
    token = await _admin_session(runtime)

    async def lift_emergency() -> None:
        async with runtime.engine.begin() as conn:
            await conn.execute(
                text("UPDATE emergency_measures SET ended_at = :now WHERE ended_at IS NULL"),
                {"now": utcnow()},
            )
        runtime.measures.clear()  # written behind the service's back: nobody else was told

    return FuzzContext(
        api_key=api_key,
        admin_token=token,
        new_admin_token=lambda: _admin_session(runtime),
        run_worker=Worker(runtime).run_once,
        reset_limits=runtime.limits.reset,
        lift_emergency=lift_emergency,
        forget=lambda: forget_caches(runtime),
    )


def forget_caches(runtime: Runtime) -> None:
    """What the process holds in memory between requests, dropped as a fresh process would
    start: verified token claims, API keys, token states, emergency measures, webhook
    endpoints, published policies and the throttle of API-key last-use writes."""
    runtime.token_claims.clear()
    runtime.api_keys.clear()
    runtime.token_states.clear()
    runtime.measures.clear()
    runtime.endpoints.clear()
    runtime.policies.clear()
    runtime.key_last_use.clear()


@pytest.fixture
async def fuzz_app(
    runtime: Runtime, fuzz_context: FuzzContext, session_loop: asyncio.AbstractEventLoop
) -> AsyncIterator[LoopBridge]:
    """The app on the test runtime (``create_app(runtime=runtime)``), bound to the bridge."""
    app = create_app(runtime=runtime)
    assert app.openapi() == SERVED_SCHEMA, "the fuzzed schema is the live app's"
    BRIDGE.bind(app, session_loop, fuzz_context)
    yield BRIDGE
    BRIDGE.unbind()


# -- checks ---------------------------------------------------------------------------------------

load_all_checks()
#: Every built-in check: the CLI's ``--checks all``.
ALL_CHECKS: dict[str, Any] = {check.__name__: check for check in CHECKS.get_all()}

# A body over the size limit is refused with 413 payload_too_large before it is even parsed
# (ServiceMiddleware): a rejection, which schemathesis' default list does not name. (A new list:
# the default one is shared by every schema.)
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]


@dataclass(frozen=True)
class Exclusion:
    check: str
    why: str
    when: Callable[[ApiCase], bool] = lambda case: True


#: The checks that cannot hold for one operation, and why. Every other check runs everywhere.
EXCLUDED: dict[str, list[Exclusion]] = {
    "POST /v1/verifications": [
        Exclusion(
            "positive_data_acceptance",
            "A schema-valid identity is mostly not a real one (the ID number's check character,"
            " birth date and province, a mobile number, a published policy version): refused"
            " with 422 invalid_id_number etc. by design. A generated Idempotency-Key reused with"
            " another body is refused with 422 idempotency_conflict, as documented.",
        )
    ],
    "POST /v1/verifications/{verification_id}/sms-code": [
        Exclusion(
            "positive_data_acceptance",
            "A well-formed code that is not the one sent is refused with 422 code_incorrect (the"
            " contract's code), and which code was sent is not in the schema.",
        )
    ],
    "POST /v1/admin/verifications/search": [
        Exclusion(
            "positive_data_acceptance",
            "Searching needs a valid ID number (check character, date, province): a random one is"
            " refused with 422 invalid_id_number by design.",
        )
    ],
    "GET /v1/admin/verifications": [
        Exclusion(
            "positive_data_acceptance",
            "The cursor is opaque: one the service did not issue is refused with 422"
            " invalid_request, and no schema can say which strings it issued.",
            when=lambda case: "cursor" in (case.query or {}),
        )
    ],
    "POST /v1/webhook-endpoints": [
        Exclusion(
            "positive_data_acceptance",
            "A schema-valid URL is mostly not one deliveries may go to (it does not resolve, or"
            " resolves to a loopback, private or reserved address), and a client has at most"
            " five endpoints: refused with 422 invalid_webhook_url, webhook_url_not_allowed or"
            " too_many_endpoints by design.",
        )
    ],
    "POST /v1/admin/emergency/{action}": [
        Exclusion(
            "positive_data_acceptance",
            "A client id the service did not create is refused with 422 unknown_client, a"
            " provider name it does not run with 422 unknown_provider, and a quarantine needs a"
            " provider while the other actions take none (422 invalid_request): which ids and"
            " names exist, and which action takes which, is not in one body's schema.",
            when=lambda case: (
                isinstance(case.body, dict)
                and (
                    "client_id" in case.body
                    or "provider" in case.body
                    or str((case.path_parameters or {}).get("action", "")).endswith("-provider")
                )
            ),
        )
    ],
    "GET /v1/verifications": [
        Exclusion(
            "positive_data_acceptance",
            "As for the admin list: an `after` cursor the service did not issue is refused with"
            " 422 invalid_request.",
            when=lambda case: "after" in (case.query or {}),
        )
    ],
    "GET /v1/verifications/{verification_id}": [
        Exclusion(
            "use_after_free",
            "Erasure (DELETE) keeps a tombstone by contract: the verification reads as status"
            " `erased` with its erasure receipt afterwards, not 404.",
        )
    ],
    "GET /v1/verifications/{verification_id}/consent-receipt": [
        Exclusion(
            "use_after_free",
            "The tombstone keeps the consent (version, time): nothing personal, and what the"
            " client may need to show later; its receipt stays available after erasure.",
        )
    ],
    "GET /v1/verifications/{verification_id}/export": [
        Exclusion(
            "use_after_free",
            "The export of an erased user shows the tombstone and its history (PIPL Art. 45):"
            " what is still held, which after erasure is nothing personal.",
        )
    ],
}


def checks_for(case: ApiCase) -> list[Any]:
    """All checks but those excluded for this case's operation."""
    excluded = {e.check for e in EXCLUDED.get(case.operation.label, []) if e.when(case)}
    return [check for name, check in ALL_CHECKS.items() if name not in excluded]


def test_exclusions_name_real_operations_and_checks() -> None:
    """An exclusion for a renamed operation or check would silently stop excluding."""
    labels = {
        f"{method.upper()} {path}"
        for path, operations in SERVED_SCHEMA["paths"].items()
        for method in operations
    }
    for label, exclusions in EXCLUDED.items():
        assert label in labels
        assert {e.check for e in exclusions} <= set(ALL_CHECKS)


# -- stateless: every operation -------------------------------------------------------------------


_CASES = itertools.count()


def fresh_idempotency_key(case: ApiCase) -> None:
    """Give a generated Idempotency-Key a suffix of its own, as a client makes a new key for each
    new request: hypothesis reuses generated values across cases, and one key with two bodies is
    the documented 422 idempotency_conflict, not a schema-valid request to accept."""
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if isinstance(key, str) and 0 < len(key) < 240 and key.isascii() and key.isprintable():
        set_header(case, "Idempotency-Key", f"{key}~{next(_CASES)}")


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_conforms_to_its_schema(case: ApiCase, fuzz_app: LoopBridge) -> None:
    """Every operation, with generated valid and invalid input, passes every built-in check."""
    fresh_idempotency_key(case)
    # Each case starts with fresh limits: the invalid-credential probes all come from one
    # address, and past the failed-authentication limit that address is answered 429.
    run_on(_bound().loop, _bound().context.reset_limits())
    case.call_and_validate(checks=checks_for(case))


# -- stateful: the links between operations -------------------------------------------------------


def valid_identity(seed: str) -> dict[str, str]:
    """A well-formed identity (check character, birth date, province, mobile number) derived
    from ``seed``: one external user is always the same person, so no ``identity_in_use``."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    birth = date(1950, 1, 1) + timedelta(days=number % 18_000)
    first17 = f"110105{birth:%Y%m%d}{number % 1000:03d}"
    return {
        "real_name": "张" + "三四五六七八九十"[number % 8],  # never one of the magic names
        "id_number": first17 + ric.calc_check_digit(first17 + "0"),  # ignores the 18th
        "phone": f"138{number % 10**8:08d}",
    }


# Stateful scenarios send valid requests only: invalid input to every operation is the stateless
# test's job, and every invalid step is one that follows no link.
schema.config.phases.stateful.generation.update(modes=[GenerationMode.POSITIVE])


class APIWorkflow(schema.as_state_machine()):  # type: ignore[misc]
    """Call sequences along the links schemathesis infers.

    Hypothesis replays the start of earlier scenarios while it explores, so a request must get
    the same status in every scenario: each one starts with fresh rate limits, and its
    Idempotency-Keys are its own (a key from an earlier scenario would replay a verification
    that scenario may since have erased).
    """

    scenarios = 0

    def setup(self) -> None:
        APIWorkflow.scenarios += 1
        run_on(_bound().loop, _bound().context.reset_limits())
        _bound().context.forget()

    def before_call(self, case: ApiCase) -> None:
        if case.meta is None or not case.meta.generation.mode.is_positive:
            return
        key = case.headers.get("Idempotency-Key") if case.headers else None
        if isinstance(key, str) and len(key) < 240:
            set_header(case, "Idempotency-Key", f"{key}~{self.scenarios}")
        # A random schema-valid identity is refused, so no verification would exist for the
        # linked operations to work on: valid cases of the create operation get a well-formed
        # identity and the published policy version.
        if case.operation.label == "POST /v1/verifications" and isinstance(case.body, dict):
            case.body.update(valid_identity(str(case.body.get("external_user_id"))))
            case.body["consent"] = {"policy_version": "2026-01"}

    def after_call(self, response: Response, case: ApiCase) -> None:
        super().after_call(response, case)
        if response.status_code in (201, 202):
            # The registry check and the SMS run in the outbox worker: run its due jobs now.
            run_on(_bound().loop, _bound().context.run_worker())
        if case.operation.path == "/v1/admin/emergency/{action}":
            # A suspension or quarantine left in force makes every later registration answer
            # 503 issuance_suspended (or needs_review) by design, which the server-error check
            # would count against the operations that follow: lift it before the next step.
            run_on(_bound().loop, _bound().context.lift_emergency())

    def validate_response(
        self,
        response: Response,
        case: ApiCase,
        additional_checks: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        case.validate_response(
            response,
            checks=checks_for(case),
            additional_checks=additional_checks,
            transport_kwargs=kwargs or None,
            recorder=self.recorder,  # what the stateful checks (use_after_free, ...) look back on
        )


def _bound() -> Any:
    """The bridge, bound by the `fuzz_app` fixture."""
    assert BRIDGE.loop is not None, "use the fuzz_app fixture"
    assert BRIDGE.context is not None
    return BRIDGE


def test_links_are_inferred() -> None:
    """A created verification links to the operations on it, or the stateful test would stay at
    the surface. (``as_state_machine`` adds the links it infers to the raw schema.)"""
    links = schema.raw_schema["paths"]["/v1/verifications"]["post"]["responses"]["201"]["links"]
    item = "#/paths/~1v1~1verifications~1{verification_id}"
    assert {link["operationRef"] for link in links.values()} >= {
        f"{item}/get",
        f"{item}/delete",
        f"{item}~1sms-code/post",
        f"{item}~1sms-code~1resend/post",
        f"{item}~1tokens/post",
    }


def test_stateful_workflows(fuzz_app: LoopBridge) -> None:
    """Call sequences along the inferred links pass every built-in check."""
    APIWorkflow.run(settings=STATEFUL_SETTINGS)
