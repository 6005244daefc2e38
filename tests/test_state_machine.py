"""A stateful property test of the integrator API: hypothesis drives random sequences of
create / run worker / right code / wrong code / resend / token / introspect / erase against
the app in process, and checks the lifecycle against a model after every step.

Invariants: statuses move only along allowed transitions (and as the model predicts); a token
is issued iff the verification is verified at that moment; an issued token introspects active
only while its verification is verified; erased verifications show no masked values; the audit
chain verifies after every example.

The app and its worker run on an event loop of this test's own (hypothesis' stateful rules are
synchronous), with a runtime built on that loop over the suite's database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import httpx
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from app.db import session_scope
from app.main import create_app
from app.runtime import Runtime, build_runtime
from app.services import audit, clients
from app.settings import Settings
from app.worker import Worker
from tests.support import new_person

T = TypeVar("T")

#: Every status change the lifecycle allows (DESIGN.md); staying put is always allowed.
ALLOWED: dict[str, frozenset[str]] = {
    "pending": frozenset({"awaiting_code", "verified", "rejected", "needs_review", "erased"}),
    "awaiting_code": frozenset({"verified", "locked", "expired", "erased"}),
    "needs_review": frozenset({"verified", "rejected", "erased"}),
    "verified": frozenset({"revoked", "erased"}),
    "rejected": frozenset({"erased"}),
    "locked": frozenset({"erased"}),
    "expired": frozenset({"erased"}),
    "revoked": frozenset({"erased"}),
    "erased": frozenset(),
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
        if targeted and data.draw(st.integers(0, 3), label="targeted") > 0:
            return data.draw(st.sampled_from(targeted), label="verification")
        return data.draw(st.sampled_from(sorted(self.models)), label="verification")

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


def test_verification_lifecycle_holds_its_invariants(runtime: Runtime) -> None:
    """Random sequences of integrator calls keep the lifecycle and token invariants."""
    harness = Harness(runtime.settings)
    VerificationLifecycle.harness = harness
    try:
        run_state_machine_as_test(VerificationLifecycle, settings=SETTINGS)
    finally:
        harness.close()
