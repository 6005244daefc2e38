"""Fault tolerance over real HTTP against `realname serve`: the process killed at each named
crash point (``REALNAME_CRASH_AT``) loses and duplicates nothing after a restart; PostgreSQL
dropping away gives 503 and a clean retry; a stalled ID registry stalls no other request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel import col, select

from app.db import session_scope
from app.faults import EXIT_CODE
from app.models import OutboxJob, SandboxMessage, Verification
from app.models._types import utcnow
from app.runtime import Runtime
from app.services import audit
from app.settings import Settings
from app.worker import Worker
from tests.conftest import auth
from tests.support import (
    Service,
    free_port,
    new_person,
    postgres_server_url,
    run_cli,
    scratch_postgres,
    serve_process,
)
from tests.test_e2e_verifiers import api, inbox_code, wait_status

pytestmark = pytest.mark.e2e

FAST = {"REALNAME_CHECK_RETRY_BACKOFF_SECONDS": "0.05", "REALNAME_WORKER_POLL_SECONDS": "0.2"}
T = TypeVar("T")
MakeClient = Callable[..., Awaitable[tuple[str, str]]]


# -- helpers -----------------------------------------------------------------------------------


async def until(
    check: Callable[[], Awaitable[T | None]], *, within: float, what: str, every: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {within} s waiting for {what}"
        await asyncio.sleep(every)


def assert_audit_chain_verifies(settings: Settings, **env: str) -> None:
    result = run_cli(settings, "audit", "verify", **env)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert json.loads(result.stdout)["ok"] is True


async def assert_chain_intact(runtime: Runtime) -> None:
    """The audit chain verifies (in process; the CLI runs at the end of each test)."""
    async with session_scope(runtime.sessions) as session:
        report = await audit.verify_chain(session)
    assert report.ok, report


async def expire_leases(runtime: Runtime) -> int:
    """Let the leases a dead worker held run out: what waiting 60 s would do."""
    async with session_scope(runtime.sessions) as session:
        result = await session.execute(
            update(OutboxJob)
            .where(col(OutboxJob.done_at).is_(None), col(OutboxJob.locked_until).is_not(None))
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def verification_ids(runtime: Runtime, external_user_id: str) -> list[str]:
    async with session_scope(runtime.sessions) as session:
        rows = await session.execute(
            select(Verification.id).where(Verification.external_user_id == external_user_id)
        )
        return [r[0] for r in rows]


async def sms_jobs(runtime: Runtime, vid: str) -> list[OutboxJob]:
    async with session_scope(runtime.sessions) as session:
        rows = await session.execute(
            select(OutboxJob).where(OutboxJob.verification_id == vid, OutboxJob.kind == "send_sms")
        )
        return list(rows.scalars())


async def inbox_size(runtime: Runtime, vid: str) -> int:
    async with session_scope(runtime.sessions) as session:
        count = await session.execute(
            select(func.count())
            .select_from(SandboxMessage)
            .where(SandboxMessage.verification_id == vid)
        )
        return int(count.scalar_one())


def crashing(
    runtime: Runtime, tmp_path: Path, point: str
) -> contextlib.AbstractContextManager[Service]:
    return serve_process(
        runtime.settings, log_path=tmp_path / "crash.log", REALNAME_CRASH_AT=point, **FAST
    )


def restarted(runtime: Runtime, tmp_path: Path) -> contextlib.AbstractContextManager[Service]:
    return serve_process(runtime.settings, log_path=tmp_path / "restart.log", **FAST)


def assert_crashed(service: Service, point: str, within: float = 20) -> None:
    assert service.wait_exit(within) == EXIT_CODE
    assert f"crashing at {point!r}" in service.log()


async def crash_while_sending(
    runtime: Runtime, make_client: MakeClient, tmp_path: Path, point: str
) -> tuple[str, str]:
    """Start an L2 verification on a server set to crash at ``point`` in the SMS send; return
    the API key and the verification id once the process has died there."""
    _, key = await make_client("test", level="L2")
    with crashing(runtime, tmp_path, point) as service:
        async with api(service.base, key) as c:
            r = await c.post("/v1/verifications", json=new_person())
            assert r.status_code == 201, r.text
        assert_crashed(service, point)
    return key, str(r.json()["id"])


# -- crash points ------------------------------------------------------------------------------


async def test_crash_after_verification_commit_replays_the_same_verification(
    runtime: Runtime, make_client: MakeClient, tmp_path: Path
) -> None:
    """Crash after the POST commits: the keyed retry replays the one verification; it moves on."""
    point = "committed POST /v1/verifications"
    (_, key), body = await make_client("test", level="L2"), new_person()
    headers = {"Idempotency-Key": f"crash-{uuid.uuid4().hex}"}
    with crashing(runtime, tmp_path, point) as service:
        async with api(service.base, key) as c:
            with pytest.raises(httpx.TransportError):
                await c.post("/v1/verifications", json=body, headers=headers)
        assert_crashed(service, point)
    await assert_chain_intact(runtime)
    committed = await verification_ids(runtime, str(body["external_user_id"]))
    assert len(committed) == 1
    await expire_leases(runtime)
    with restarted(runtime, tmp_path) as service:
        async with api(service.base, key) as c:
            retry = await c.post("/v1/verifications", json=body, headers=headers)
            assert retry.status_code == 201, retry.text
            assert retry.headers.get("Idempotent-Replayed") == "true"
            assert retry.json()["id"] == committed[0]
            assert (await wait_status(c, committed[0]))["status"] == "awaiting_code"
            await inbox_code(c, committed[0])
    assert await verification_ids(runtime, str(body["external_user_id"])) == committed
    assert_audit_chain_verifies(runtime.settings)


@pytest.mark.usefixtures("queued_checks")
async def test_the_checks_job_is_done_in_the_transaction_that_queues_the_code(
    runtime: Runtime,
    make_client: MakeClient,
    http: httpx.AsyncClient,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The checks job is marked done by the transaction that records the checks and queues
    the code's SMS, not by one after it: a worker that can write nothing more once that
    transaction has committed (a crash) leaves the SMS job and no checks job to run again
    (a second run would race the SMS job the first one queued)."""
    _, key = await make_client("test", level="L2")
    r = await http.post("/v1/verifications", json=new_person(), headers=auth(key))
    vid = r.json()["id"]
    job = await worker.claim()
    assert job is not None
    assert (job.kind, job.verification_id) == ("run_checks", vid)

    async def crashed(*_: object, **__: object) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(Worker, "_finish", crashed)
    monkeypatch.setattr(Worker, "_retry", crashed)
    await worker._handle(job)
    async with session_scope(runtime.sessions) as session:
        jobs = {
            j.kind: j
            for j in (
                await session.execute(select(OutboxJob).where(OutboxJob.verification_id == vid))
            ).scalars()
        }
    assert jobs["run_checks"].done_at is not None
    assert jobs["run_checks"].locked_until is None
    assert jobs["send_sms"].done_at is None


@pytest.mark.usefixtures("queued_checks")
async def test_crash_before_sms_send_delivers_the_code_once_after_restart(
    runtime: Runtime, make_client: MakeClient, tmp_path: Path
) -> None:
    """Crash before the SMS send: after the restart the code is delivered once and verifies."""
    key, vid = await crash_while_sending(runtime, make_client, tmp_path, "before_sms_send")
    await assert_chain_intact(runtime)
    assert await inbox_size(runtime, vid) == 0
    [job] = await sms_jobs(runtime, vid)
    assert (job.done_at, job.attempts) == (None, 1)
    assert await expire_leases(runtime) == 1
    with restarted(runtime, tmp_path) as service:
        async with api(service.base, key) as c:
            code = await inbox_code(c, vid)

            async def job_done() -> bool:
                return all(j.done_at is not None for j in await sms_jobs(runtime, vid))

            await until(job_done, within=10, what="the SMS job to finish")
            [job] = await sms_jobs(runtime, vid)
            assert (job.attempts, job.last_error, job.payload) == (2, None, None)
            assert await inbox_size(runtime, vid) == 1
            r = await c.post(f"/v1/verifications/{vid}/sms-code", json={"code": code})
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "verified"
    assert_audit_chain_verifies(runtime.settings)


@pytest.mark.usefixtures("queued_checks")
async def test_crash_after_sms_send_does_not_duplicate_the_message(
    runtime: Runtime, make_client: MakeClient, tmp_path: Path
) -> None:
    """Crash after the SMS send: the retried job finds it sent and ends done; no 2nd message."""
    key, vid = await crash_while_sending(runtime, make_client, tmp_path, "after_sms_send")
    await assert_chain_intact(runtime)
    assert await inbox_size(runtime, vid) == 1
    [job] = await sms_jobs(runtime, vid)
    assert (job.done_at, job.attempts) == (None, 1)
    assert await expire_leases(runtime) == 1
    with restarted(runtime, tmp_path) as service:
        async with api(service.base, key) as c:

            async def job_done() -> bool:
                return all(j.done_at is not None for j in await sms_jobs(runtime, vid))

            await until(job_done, within=10, what="the SMS job to finish")
            [job] = await sms_jobs(runtime, vid)
            assert (job.attempts, job.last_error, job.payload) == (2, None, None)
            messages = (
                await c.get("/v1/sandbox/messages", params={"verification_id": vid})
            ).json()["data"]
            assert len(messages) == 1
            r = await c.post(
                f"/v1/verifications/{vid}/sms-code", json={"code": await inbox_code(c, vid)}
            )
            assert r.json()["status"] == "verified", r.text
    assert_audit_chain_verifies(runtime.settings)


async def test_crash_after_verified_commit_keeps_verified_and_issues_a_token(
    runtime: Runtime, make_client: MakeClient, tmp_path: Path
) -> None:
    """Crash after `verified` commits: still verified after the restart; a token is issued."""
    point = "committed POST /v1/verifications/{verification_id}/sms-code"
    _, key = await make_client("test", level="L2")
    with crashing(runtime, tmp_path, point) as service:
        async with api(service.base, key) as c:
            vid = (await c.post("/v1/verifications", json=new_person())).json()["id"]
            assert (await wait_status(c, vid))["status"] == "awaiting_code"
            code = await inbox_code(c, vid)
            with pytest.raises(httpx.TransportError):
                await c.post(f"/v1/verifications/{vid}/sms-code", json={"code": code})
        assert_crashed(service, point)
    await assert_chain_intact(runtime)
    await expire_leases(runtime)
    with restarted(runtime, tmp_path) as service:
        async with api(service.base, key) as c:
            assert (await c.get(f"/v1/verifications/{vid}")).json()["status"] == "verified"
            again = await c.post(f"/v1/verifications/{vid}/sms-code", json={"code": code})
            assert again.status_code == 409
            assert again.json()["code"] == "verification_not_awaiting_code"
            issued = await c.post(f"/v1/verifications/{vid}/tokens")
            assert issued.status_code == 201, issued.text
            token = issued.json()["access_token"]
            introspected = await c.post("/v1/tokens/introspect", json={"token": token})
            assert introspected.json()["active"] is True
    assert_audit_chain_verifies(runtime.settings)


# -- PostgreSQL dropping away ------------------------------------------------------------------


class LoopThread:
    """An asyncio loop in a thread of its own, for servers that must keep answering while the
    test's loop is blocked (starting `realname serve`, which migrates through them)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.call(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class _Link:
    """One proxied connection: its two transports and what the trigger has seen on it."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tail = b""
        self.dirty = False  # sent a statement containing the marker
        self.committing = False  # then sent COMMIT, which was forwarded

    def abort(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()


class DatabaseProxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL that can be cut: every connection is
    dropped and new ones are refused (the port is closed) until :meth:`restore`.

    Armed with :meth:`cut_at_commit_of`, it cuts by itself on the first connection that sends
    a statement containing the marker and then ``COMMIT``: either before forwarding the COMMIT
    (the transaction is lost) or, with ``after_commit``, once PostgreSQL has answered it but
    before the answer reaches the service (committed, yet the service cannot know).
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._loop = LoopThread("db-proxy")
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._marker: bytes | None = None
        self._after_commit = False
        self.tripped = threading.Event()

    def __enter__(self) -> DatabaseProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self._loop.close()

    def restore(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

        self._loop.call(listen())

    def cut(self) -> None:
        async def cut() -> None:
            self._cut_now()

        self._loop.call(cut())

    def cut_at_commit_of(self, marker: bytes, *, after_commit: bool = False) -> None:
        async def arm() -> None:
            self._marker, self._after_commit = marker, after_commit

        self._loop.call(arm())

    def _cut_now(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.abort()
        self._links.clear()

    def _trip(self) -> None:
        self._marker = None
        self._cut_now()
        self.tripped.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pipe(link, reader, up_writer, upstream=True),
                self._pipe(link, up_reader, writer, upstream=False),
            )
        finally:
            self._links.discard(link)
            link.abort()

    async def _pipe(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self._marker is not None and self._trips(link, data, upstream=upstream):
                    self._trip()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def _trips(self, link: _Link, data: bytes, *, upstream: bool) -> bool:
        """Whether to cut instead of forwarding ``data``."""
        assert self._marker is not None
        if not upstream:
            return link.committing  # PostgreSQL's answer to the COMMIT: swallow it
        if link.dirty and b"COMMIT" in data:
            link.committing = self._after_commit
            return not self._after_commit
        window = link.tail + data
        link.tail = window[-256:]
        link.dirty = link.dirty or self._marker in window
        return False


@pytest.fixture(scope="module")
def fault_database(settings: Settings) -> Iterator[str]:
    """A PostgreSQL database of this module's own (whatever the rest of the suite uses)."""
    with scratch_postgres(settings, "realname_fault") as url:
        yield url


def _proxied(url: str, port: int) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def _target() -> tuple[str, int]:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_server_url())
    return url.host or "127.0.0.1", url.port or 5432


#: What a POST /v1/verifications writes (and nothing else in these tests writes meanwhile).
_FOOTPRINT = {
    "verifications": "SELECT count(*) FROM verifications",
    "identities": "SELECT count(*) FROM identities",
    "client_identities": "SELECT count(*) FROM client_identities",
    "idempotency_keys": "SELECT count(*) FROM idempotency_keys",
    "checks": "SELECT count(*) FROM checks",
    "created_events": "SELECT count(*) FROM audit_events WHERE action = 'verification.created'",
}


async def footprint(settings: Settings, database: str) -> dict[str, int]:
    """Row counts, read straight from PostgreSQL (not through the proxy)."""
    url = settings.model_copy(update={"database_url": database}).async_database_url
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return {
                k: int((await conn.execute(text(q))).scalar_one()) for k, q in _FOOTPRINT.items()
            }
    finally:
        await engine.dispose()


@contextlib.contextmanager
def proxied_service(
    settings: Settings, database: str, tmp_path: Path
) -> Iterator[tuple[DatabaseProxy, Service, str]]:
    """`realname serve` reaching PostgreSQL only through a :class:`DatabaseProxy`; yields the
    proxy, the service and a new test-mode API key."""
    created = run_cli(
        settings,
        "clients",
        "create",
        "--name",
        "fault",
        "--mode",
        "test",
        "--level",
        "L1",
        REALNAME_DATABASE_URL=database,
    )
    assert created.returncode == 0, created.stderr
    with (
        DatabaseProxy(*_target()) as proxy,
        serve_process(
            settings,
            log_path=tmp_path / "serve.log",
            REALNAME_DATABASE_URL=_proxied(database, proxy.port),
            **FAST,
        ) as service,
    ):
        yield proxy, service, json.loads(created.stdout)["api_key"]


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "service_unavailable"
    assert int(response.headers["Retry-After"]) >= 1


async def test_database_cut_answers_503_then_the_retry_succeeds_once(
    settings: Settings, fault_database: str, tmp_path: Path
) -> None:
    """Database unreachable: prompt 503s, nothing written; the keyed retry then succeeds once."""
    with proxied_service(settings, fault_database, tmp_path) as (proxy, service, key):
        async with api(service.base, key) as c:
            c.timeout = httpx.Timeout(10)
            before = await c.post("/v1/verifications", json=new_person())
            assert before.status_code == 201, before.text
            body, idem = new_person(), {"Idempotency-Key": f"cut-{uuid.uuid4().hex}"}
            baseline = await footprint(settings, fault_database)
            proxy.cut()
            requests: list[Callable[[], Awaitable[httpx.Response]]] = [
                lambda: c.post("/v1/verifications", json=body, headers=idem),
                lambda: c.get(f"/v1/verifications/{before.json()['id']}"),
                lambda: c.post("/v1/verifications", json=body, headers=idem),
            ]
            for request in requests:
                started = time.monotonic()
                assert_unavailable(await request())
                assert time.monotonic() - started < 5
            assert (await c.get("/readyz")).status_code == 503
            assert await footprint(settings, fault_database) == baseline
            proxy.restore()
            first = await c.post("/v1/verifications", json=body, headers=idem)
            assert first.status_code == 201, first.text
            assert "Idempotent-Replayed" not in first.headers
            replay = await c.post("/v1/verifications", json=body, headers=idem)
            assert replay.status_code == 201
            assert replay.headers.get("Idempotent-Replayed") == "true"
            assert replay.json()["id"] == first.json()["id"]
            assert (await wait_status(c, first.json()["id"]))["status"] == "verified"
    assert await footprint(settings, fault_database) == {k: n + 1 for k, n in baseline.items()}
    assert "unhandled error" not in service.log()
    assert_audit_chain_verifies(settings, REALNAME_DATABASE_URL=fault_database)


async def test_database_dropping_mid_request_answers_503_and_leaves_nothing_half_written(
    settings: Settings, fault_database: str, tmp_path: Path
) -> None:
    """Database dropping before a POST commits: 503, none of its rows; keyed retry works once."""
    with proxied_service(settings, fault_database, tmp_path) as (proxy, service, key):
        async with api(service.base, key) as c:
            c.timeout = httpx.Timeout(10)
            assert (await c.get("/readyz")).status_code == 200
            body, idem = new_person(), {"Idempotency-Key": f"mid-{uuid.uuid4().hex}"}
            baseline = await footprint(settings, fault_database)
            proxy.cut_at_commit_of(b"INSERT INTO verifications")
            started = time.monotonic()
            assert_unavailable(await c.post("/v1/verifications", json=body, headers=idem))
            assert time.monotonic() - started < 5
            assert proxy.tripped.is_set()
            assert await footprint(settings, fault_database) == baseline
            proxy.restore()
            first = await c.post("/v1/verifications", json=body, headers=idem)
            assert first.status_code == 201, first.text
            assert "Idempotent-Replayed" not in first.headers
            replay = await c.post("/v1/verifications", json=body, headers=idem)
            assert replay.json()["id"] == first.json()["id"]
    assert await footprint(settings, fault_database) == {k: n + 1 for k, n in baseline.items()}
    assert "unhandled error" not in service.log()
    assert_audit_chain_verifies(settings, REALNAME_DATABASE_URL=fault_database)


async def test_database_dropping_after_commit_answers_503_and_the_retry_replays(
    settings: Settings, fault_database: str, tmp_path: Path
) -> None:
    """Database dropping after a POST commits: 503; the keyed retry replays it, no 2nd one."""
    with proxied_service(settings, fault_database, tmp_path) as (proxy, service, key):
        async with api(service.base, key) as c:
            c.timeout = httpx.Timeout(10)
            assert (await c.get("/readyz")).status_code == 200
            body, idem = new_person(), {"Idempotency-Key": f"ack-{uuid.uuid4().hex}"}
            baseline = await footprint(settings, fault_database)
            proxy.cut_at_commit_of(b"INSERT INTO verifications", after_commit=True)
            assert_unavailable(await c.post("/v1/verifications", json=body, headers=idem))
            assert proxy.tripped.is_set()
            committed = await footprint(settings, fault_database)
            assert committed == {k: n + 1 for k, n in baseline.items()}
            proxy.restore()
            retry = await c.post("/v1/verifications", json=body, headers=idem)
            assert retry.status_code == 201, retry.text
            assert retry.headers.get("Idempotent-Replayed") == "true"
            assert (await wait_status(c, retry.json()["id"]))["status"] == "verified"
    assert await footprint(settings, fault_database) == committed
    assert "unhandled error" not in service.log()
    assert_audit_chain_verifies(settings, REALNAME_DATABASE_URL=fault_database)


# -- a stalled ID registry ---------------------------------------------------------------------


class StalledRegistry:
    """An HTTP 'registry' on 127.0.0.1 that accepts connections, reads the request and never
    answers: each connection is held for 30 s (or until the caller gives up), then closed."""

    HOLD_SECONDS = 30.0

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._loop = LoopThread("stalled-registry")
        self._server: asyncio.Server | None = None

    def __enter__(self) -> StalledRegistry:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._hold, "127.0.0.1", self.port)

        self._loop.call(listen())
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        self._loop.call(stop())
        self._loop.close()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            async with asyncio.timeout(self.HOLD_SECONDS):
                while await reader.read(65536):
                    pass
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


async def test_stalled_registry_does_not_stall_other_requests(
    runtime: Runtime, make_client: MakeClient, tmp_path: Path
) -> None:
    """A registry that never answers stalls no other request; its check ends in needs_review."""
    (_, live_key), (_, test_key) = (
        await make_client("live", level="L1"),
        await make_client("test", level="L1"),
    )
    with (
        StalledRegistry() as registry,
        serve_process(
            runtime.settings,
            log_path=tmp_path / "serve.log",
            REALNAME_REGISTRY_URL=registry.url,
            **FAST,
        ) as service,
    ):
        async with api(service.base, test_key) as sandbox, api(service.base, live_key) as live:
            other = (await sandbox.post("/v1/verifications", json=new_person())).json()["id"]
            assert (await wait_status(sandbox, other))["status"] == "verified"
            stuck = (await live.post("/v1/verifications", json=new_person())).json()["id"]

            async def registry_called() -> bool:
                return registry.accepted >= 1

            await until(registry_called, within=5, what="the check to reach the registry")
            requests: list[Callable[[], Awaitable[httpx.Response]]] = [
                lambda: sandbox.get(f"/v1/verifications/{other}"),
                lambda: live.get(f"/v1/verifications/{stuck}"),
                lambda: sandbox.post("/v1/verifications", json=new_person()),
                lambda: sandbox.get("/readyz"),
            ]
            durations = []
            burst = time.monotonic()
            for i in range(20):
                started = time.monotonic()
                r = await requests[i % len(requests)]()
                durations.append(time.monotonic() - started)
                assert r.status_code in {200, 201}, r.text
            assert time.monotonic() - burst < 5, durations
            assert max(durations) < 2, durations
            assert (await live.get(f"/v1/verifications/{stuck}")).json()["status"] == "pending"

            # A check job tries the registry 3 times (5 s read timeout each), and the job is
            # tried 3 times: about 46 s in all. Polled slowly: the client quota is 600/minute.
            async def left_pending() -> dict[str, Any] | None:
                r = await live.get(f"/v1/verifications/{stuck}")
                assert r.status_code == 200, r.text
                assert r.json()["status"] != "verified"
                return dict(r.json()) if r.json()["status"] != "pending" else None

            v = await until(left_pending, within=58, what="the stuck check to give up", every=0.5)
            assert (v["status"], v["status_reason"]) == ("needs_review", "registry_unavailable")
            assert v["checks"][0]["status"] == "unavailable"
            assert registry.accepted == 9  # 3 jobs x 3 attempts, each its own connection
