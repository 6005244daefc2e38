"""The lifecycle's table of allowed moves against the implementation, and a stateful property
test of the integrator API.

``transition`` makes every move of ``lifecycle.MOVES`` and refuses every other one. Then
hypothesis drives random sequences of create / run worker / right code / wrong code / resend /
token / introspect / erase against the app in process, and checks the lifecycle against a model
and the table after every step.

Invariants: statuses move only along allowed transitions (and as the model predicts); a token
is issued iff the verification is verified at that moment; an issued token introspects active
only while its verification is verified; erased verifications show no masked values; the audit
chain verifies after every example.

The app and its worker run on an event loop of this test's own (hypothesis' stateful rules are
synchronous), with a runtime built on that loop over the suite's database.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlmodel import col, select

from app.db import session_scope
from app.main import create_app
from app.models import AuditEvent, Status, Verification
from app.models._types import utcnow
from app.runtime import Runtime, build_runtime
from app.services import audit, clients, lifecycle
from app.services.lifecycle import MOVES, IllegalMove, StaleState, check_moves, transition
from app.settings import Settings
from app.worker import Worker
from tests.support import new_person

T = TypeVar("T")

#: Every status change the lifecycle allows: the code's own table (``lifecycle.MOVES``, which
#: ``transition`` enforces; ``tests/test_lifecycle_table.py`` checks that it does). Staying put
#: is always allowed.
ALLOWED: dict[str, frozenset[str]] = {
    source.value: frozenset(to.value for to in targets) for source, targets in MOVES.items()
}
#: Real names: an ordinary one and the mock registry's magic names.
NAMES = {"normal": "张三", "mismatch": "不一致", "down": "服务异常", "quota": "超出限额"}
#: Where the checks take a pending verification, by kind of name and level.
AFTER_CHECKS = {
    ("normal", "L1"): "verified",
    ("normal", "L2"): "awaiting_code",
    **{("mismatch", level): "rejected" for level in ("L1", "L2")},
    **{("down", level): "needs_review" for level in ("L1", "L2")},
    **{("quota", level): "needs_review" for level in ("L1", "L2")},
}
#: Kinds of person created: mostly ordinary ones, which get furthest.
KINDS = ["normal", "normal", "normal", "mismatch", "down", "quota"]
LEVELS = ["L1", "L2", "L2"]
POLICY = "2026-01"  # the shipped collection rules, kept across tests
MAX_ATTEMPTS = 5

SETTINGS = settings(
    max_examples=12,
    stateful_step_count=30,
    database=None,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    # Shrinking stays on; the explain phase re-runs every example of a failure, minutes here.
    phases=[phase for phase in Phase if phase is not Phase.explain],
)


class Harness:
    """The app over httpx's ASGI transport and an outbox worker, on a loop of their own."""

    def __init__(self, settings_: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.runtime: Runtime = self.run(self._build(settings_))
        self.worker = Worker(self.runtime)
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(runtime=self.runtime)),
            base_url="http://testserver",
        )

    @staticmethod
    async def _build(settings_: Settings) -> Runtime:
        # Redis keys of its own: the model counts SMS per phone, and the suite (or another run
        # sharing the Redis database) resets the default prefix after every test.
        return build_runtime(
            settings_.model_copy(update={"redis_prefix": f"fsm{uuid.uuid4().hex}"})
        )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            self.run(self.http.aclose())
            self.run(self.runtime.limits.reset())  # drop this test's Redis keys
            self.run(self.runtime.close())
            self.run(self.loop.shutdown_asyncgens())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()


@dataclass
class Model:
    """What the test expects of one verification."""

    kind: str
    level: str
    status: str = "pending"
    #: Codes delivered to the sandbox inbox, oldest first.
    delivered: list[str] = field(default_factory=list)
    #: Codes issued (the first one and each accepted resend).
    issued: int = 0
    #: Tries counted against the current code.
    attempts: int = 0

    def current_code(self) -> str | None:
        return self.delivered[-1] if self.issued and len(self.delivered) == self.issued else None


class VerificationLifecycle(RuleBasedStateMachine):
    harness: ClassVar[Harness]

    tokens = Bundle("tokens")

    def __init__(self) -> None:
        super().__init__()
        self.h = type(self).harness
        self.key = self.h.run(self._new_client())
        self.models: dict[str, Model] = {}
        self.seen: dict[str, str] = {}
        self.issued_tokens: list[tuple[str, str]] = []
        #: Verifications whose phone has had an SMS counted since the limits were last reset.
        self.sms_counted: set[str] = set()

    async def _new_client(self) -> str:
        async with session_scope(self.h.runtime.sessions) as session:
            _, key = await clients.create_client(
                session, self.h.runtime.master_key, name="fsm", mode="test", default_level="L1"
            )
        return key

    # -- plumbing ------------------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        response = self.h.run(self.h.http.request(method, path, headers=headers, **kwargs))
        assert response.status_code < 500, response.text
        return response

    def observe(self, vid: str) -> dict[str, Any]:
        """GET the verification; check its transition, the model, and the erasure rule."""
        r = self.call("GET", f"/v1/verifications/{vid}")
        assert r.status_code == 200, r.text
        return self._check(vid, r.json())

    def _check(self, vid: str, body: dict[str, Any]) -> dict[str, Any]:
        status = body["status"]
        before = self.seen.get(vid, "pending")
        assert status == before or status in ALLOWED[before], f"{before} -> {status}"
        self.seen[vid] = status
        assert status == self.models[vid].status, (vid, self.models[vid], body)
        if status == "erased":
            assert set(body["masked"].values()) <= {None}, body["masked"]
        return body

    def inbox(self, vid: str) -> list[str]:
        """Codes in the sandbox inbox for ``vid``, oldest first."""
        r = self.call("GET", "/v1/sandbox/messages", params={"verification_id": vid})
        assert r.status_code == 200, r.text
        bodies = [m["body"] for m in reversed(r.json()["data"])]
        return [
            next(t for t in b.replace(",", " ").split() if t.isdigit() and len(t) == 6)
            for b in bodies
        ]

    def drain(self) -> None:
        """Run the worker until idle and move the model the way the checks and sends do."""
        self.h.run(self.h.worker.run_until_idle())
        for vid, model in self.models.items():
            if model.status not in {"pending", "awaiting_code"}:
                continue  # the worker only moves these on
            if model.status == "pending":
                model.status = AFTER_CHECKS[(model.kind, model.level)]
                if model.status == "awaiting_code":
                    model.issued = 1
                    self.sms_counted.add(vid)
            if model.status == "awaiting_code":
                model.delivered = self.inbox(vid)
                assert len(model.delivered) == model.issued, (vid, model)
            self.observe(vid)

    def pick(self, data: st.DataObject, *wanted: str) -> str:
        """A verification: mostly one in a ``wanted`` status (when there is one), else any."""
        targeted = sorted(v for v, m in self.models.items() if m.status in wanted)
        # Always the same draws, whatever the statuses (which a retry's timing can change
        # between a run and its replay): Hypothesis needs the same shape of data each time.
        aim = data.draw(st.integers(0, 3), label="targeted") > 0
        pool = targeted if targeted and aim else sorted(self.models)
        return pool[data.draw(st.integers(0, 1_000_000), label="verification") % len(pool)]

    def wrong_code(self, model: Model, *, stale: bool) -> str:
        right = model.current_code()
        if stale and len(model.delivered) > 1 and model.delivered[-2] != right:
            return model.delivered[-2]
        return f"{(int(right or 0) + 1) % 1_000_000:06d}"

    # -- rules ---------------------------------------------------------------------------------

    @rule(kind=st.sampled_from(KINDS), level=st.sampled_from(LEVELS), settle=st.booleans())
    def create(self, kind: str, level: str, settle: bool) -> None:
        """Start a verification; with ``settle``, let the worker run its checks at once."""
        r = self.call(
            "POST", "/v1/verifications", json=new_person(real_name=NAMES[kind], level=level)
        )
        assert r.status_code == 201, r.text
        vid = str(r.json()["id"])
        self.models[vid] = Model(kind=kind, level=level)
        self._check(vid, r.json())
        if settle:
            self.drain()

    @rule()
    def run_worker(self) -> None:
        self.drain()

    @precondition(lambda self: self.models)
    @rule(data=st.data())
    def submit_right_code(self, data: st.DataObject) -> None:
        vid = self.pick(data, "awaiting_code")
        model = self.models[vid]
        if model.status == "awaiting_code" and model.current_code() is None:
            self.drain()  # a resent code is still in the outbox: deliver it first
        code = model.current_code() or (model.delivered[-1] if model.delivered else "123456")
        r = self.call("POST", f"/v1/verifications/{vid}/sms-code", json={"code": code})
        if model.status == "awaiting_code":
            assert r.status_code == 200, r.text
            model.status = "verified"
            self._check(vid, r.json())
        else:
            self._refused_code(model, r)
            self.observe(vid)

    @precondition(lambda self: self.models)
    @rule(data=st.data(), times=st.integers(1, MAX_ATTEMPTS), stale=st.booleans())
    def submit_wrong_code(self, data: st.DataObject, times: int, stale: bool) -> None:
        """Submit a wrong code ``times`` times: a superseded one when ``stale`` (and one
        exists), else a code next to the right one."""
        vid = self.pick(data, "awaiting_code")
        model = self.models[vid]
        if model.status == "awaiting_code" and model.current_code() is None:
            self.drain()
        code = self.wrong_code(model, stale=stale)
        for _ in range(times):
            r = self.call("POST", f"/v1/verifications/{vid}/sms-code", json={"code": code})
            if model.status == "awaiting_code":
                assert r.status_code == 422, r.text
                model.attempts += 1
                if model.attempts >= MAX_ATTEMPTS:
                    assert r.json()["code"] == "attempts_exhausted"
                    model.status = "locked"
                else:
                    assert r.json()["code"] == "code_incorrect"
                    assert r.json()["attempts_remaining"] == MAX_ATTEMPTS - model.attempts
            else:
                self._refused_code(model, r)
            self.observe(vid)

    def _refused_code(self, model: Model, r: httpx.Response) -> None:
        if model.status == "locked":
            assert (r.status_code, r.json()["code"]) == (422, "attempts_exhausted"), r.text
        else:
            assert (r.status_code, r.json()["code"]) == (409, "verification_not_awaiting_code")

    @precondition(lambda self: self.models)
    @rule(data=st.data(), reset_limits=st.booleans())
    def resend(self, data: st.DataObject, reset_limits: bool) -> None:
        vid = self.pick(data, "awaiting_code")
        model = self.models[vid]
        if reset_limits:
            self.h.run(self.h.runtime.limits.reset())
            self.sms_counted.clear()
        r = self.call("POST", f"/v1/verifications/{vid}/sms-code/resend")
        if model.status == "awaiting_code" and vid in self.sms_counted:
            assert (r.status_code, r.json()["code"]) == (429, "rate_limited"), r.text
            assert int(r.headers["Retry-After"]) >= 1
        elif model.status == "awaiting_code":
            assert r.status_code == 202, r.text
            model.issued += 1
            model.attempts = 0
            self.sms_counted.add(vid)
        else:
            self._refused_code(model, r)
        self.observe(vid)

    @precondition(lambda self: self.models)
    @rule(target=tokens, data=st.data())
    def issue_token(self, data: st.DataObject) -> Any:
        vid = self.pick(data, "verified")
        status = self.observe(vid)["status"]
        r = self.call("POST", f"/v1/verifications/{vid}/tokens")
        if status != "verified":
            assert (r.status_code, r.json()["code"]) == (409, "verification_not_verified"), r.text
            return multiple()
        assert r.status_code == 201, r.text
        token = (vid, str(r.json()["access_token"]))
        self.issued_tokens.append(token)
        return token

    @rule(token=tokens)
    def introspect(self, token: tuple[str, str]) -> None:
        self.assert_introspection(*token)

    def assert_introspection(self, vid: str, token: str) -> None:
        r = self.call("POST", "/v1/tokens/introspect", json={"token": token})
        assert r.status_code == 200, r.text
        verified = self.observe(vid)["status"] == "verified"
        assert r.json()["active"] is verified, (self.models[vid], r.json())

    @precondition(lambda self: self.models)
    @rule(data=st.data())
    def erase(self, data: st.DataObject) -> None:
        vid = self.pick(data)
        r = self.call("DELETE", f"/v1/verifications/{vid}")
        assert r.status_code == 200, r.text
        self.models[vid].status = "erased"
        self._check(vid, r.json())

    def teardown(self) -> None:
        for vid in self.models:
            self.observe(vid)
        for vid, token in self.issued_tokens:
            self.assert_introspection(vid, token)
        self.h.run(self._assert_chain())

    async def _assert_chain(self) -> None:
        async with session_scope(self.h.runtime.sessions) as session:
            report = await audit.verify_chain(session)
        assert report.ok, report


@pytest.mark.usefixtures("queued_checks")
def test_verification_lifecycle_holds_its_invariants(runtime: Runtime) -> None:
    """Random sequences of integrator calls keep the lifecycle and token invariants."""
    harness = Harness(runtime.settings)
    VerificationLifecycle.harness = harness
    try:
        run_state_machine_as_test(VerificationLifecycle, settings=SETTINGS)
    finally:
        harness.close()


# -- the table against the implementation ------------------------------------------------------


def test_the_table_has_a_row_for_every_status() -> None:
    """Every status has its row; nothing moves to ``pending`` and nothing leaves ``erased``."""
    assert set(MOVES) == set(Status)
    assert all(Status.PENDING not in targets for targets in MOVES.values())
    assert MOVES[Status.ERASED] == frozenset()
    assert all(Status.ERASED in MOVES[s] for s in Status if s != Status.ERASED)


@given(st.frozensets(st.sampled_from(Status)), st.sampled_from(Status))
def test_a_move_is_accepted_exactly_when_the_table_has_it(
    expect: frozenset[Status], to: Status
) -> None:
    """Every (expected, to) pair is checked against the table; one outside it is refused."""
    allowed = bool(expect) and all(to in MOVES[s] for s in expect)
    if allowed:
        assert check_moves(expect, to) == expect
    else:
        with pytest.raises(IllegalMove):
            check_moves(expect, to)


def test_the_default_expectation_is_every_source_of_the_target() -> None:
    """Without ``expect``, a move to ``to`` is expected from each status the table allows."""
    for to in Status:
        assert lifecycle.sources_of(to) == {s for s in Status if to in MOVES[s]}


async def _new(runtime: Runtime, client_id: str, status: Status, user: str) -> str:
    async with session_scope(runtime.sessions) as session:
        verification = Verification(
            client_id=client_id,
            external_user_id=user,
            status=status,
            level="L1",
            policy_version=POLICY,
            consent_at=utcnow(),
        )
        session.add(verification)
    return verification.id


async def test_transition_makes_every_move_of_the_table_and_no_other(
    runtime: Runtime, make_client: Callable[..., Any]
) -> None:
    """For every pair of statuses, ``transition`` moves (with its audit event) when the table
    has the move, and raises IllegalMove, leaving the verification as it was, when not."""
    client_id, _ = await make_client("test", level="L1")
    for n, (source, to) in enumerate(itertools.product(Status, Status)):
        vid = await _new(runtime, client_id, source, f"user_{n}")
        if to in MOVES[source]:
            async with session_scope(runtime.sessions) as session:
                row = await session.get(Verification, vid)
                assert row is not None
                event = await transition(session, row, to, expect=[source], reason="test")
            assert (event.action, json.loads(event.data)["from"]) == (f"verification.{to}", source)
        else:
            async with session_scope(runtime.sessions) as session:
                row = await session.get(Verification, vid)
                assert row is not None
                with pytest.raises(IllegalMove):
                    await transition(session, row, to, expect=[source])
        async with session_scope(runtime.sessions) as session:
            row = await session.get(Verification, vid)
            assert row is not None
            assert row.status == (to if to in MOVES[source] else source), (source, to)


async def test_without_expect_any_source_of_the_target_moves(
    runtime: Runtime, make_client: Callable[..., Any]
) -> None:
    """The default ``expect`` takes a verification from any status allowed to reach ``to``; a
    verification in another status is stale (someone moved it first), not illegal."""
    client_id, _ = await make_client("test", level="L1")
    moved = await _new(runtime, client_id, Status.NEEDS_REVIEW, "user_a")
    stuck = await _new(runtime, client_id, Status.REJECTED, "user_b")
    async with session_scope(runtime.sessions) as session:
        row = await session.get(Verification, moved)
        assert row is not None
        await transition(session, row, Status.REVOKED)
        assert row.status == Status.REVOKED
    async with session_scope(runtime.sessions) as session:
        row = await session.get(Verification, stuck)
        assert row is not None
        with pytest.raises(StaleState):
            await transition(session, row, Status.REVOKED)
    async with session_scope(runtime.sessions) as session:
        actions = (
            await session.execute(
                select(AuditEvent.action).where(col(AuditEvent.subject_id).in_([moved, stuck]))
            )
        ).scalars()
        assert list(actions) == ["verification.revoked"]
