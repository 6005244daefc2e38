"""Group commit: concurrent token issues written together, each still answered on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, text
from sqlalchemy.exc import OperationalError
from sqlmodel import col, select

from app.batching import GroupCommit
from app.db import session_scope
from app.errors import ProblemError
from app.main import create_app
from app.models import AuditEvent, Client, ServiceToken
from app.runtime import Runtime, build_runtime
from app.services import audit, clients, tokens
from app.settings import Settings
from app.worker import Worker
from tests.conftest import auth
from tests.support import new_person, scratch_postgres
from tests.test_lifecycle import start
from tests.test_tokens import introspect, verified

# -- the batching itself ---------------------------------------------------------------------


class Recorder:
    """A write that records its batches and waits for ``release`` before answering."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        return [ValueError(i) if i < 0 else i * 10 for i in items]


async def test_a_lone_item_is_written_at_once() -> None:
    write = Recorder()
    write.release.set()
    group: GroupCommit[int, int] = GroupCommit(write)
    assert await asyncio.wait_for(group.submit(1), 1) == 10
    assert write.batches == [[1]]


async def test_items_that_arrive_during_a_write_go_together_in_the_next() -> None:
    write = Recorder()
    group: GroupCommit[int, int] = GroupCommit(write, writers=1, max_batch=3)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.submit(i)) for i in range(2, 7)]
    await asyncio.sleep(0)
    assert write.batches == [[1]]  # the others wait for the one writer
    write.release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60]
    assert write.batches == [[1], [2, 3, 4], [5, 6]]  # at most max_batch each, in arrival order


async def test_a_second_writer_takes_what_arrives_while_the_first_writes() -> None:
    write = Recorder()
    group: GroupCommit[int, int] = GroupCommit(write, writers=2)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(group.submit(2))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.submit(i)) for i in (3, 4)]
    await asyncio.sleep(0)
    assert write.batches == [[1], [2]]  # both writers busy: 3 and 4 wait for the first free
    write.release.set()
    assert await asyncio.gather(first, second, *rest) == [10, 20, 30, 40]
    assert write.batches == [[1], [2], [3, 4]]


async def test_each_item_gets_its_own_outcome() -> None:
    write = Recorder()
    write.release.set()
    group: GroupCommit[int, int] = GroupCommit(write, writers=1)
    outcomes = await asyncio.gather(*(group.submit(i) for i in (1, -2, 3)), return_exceptions=True)
    assert outcomes[0] == 10
    assert outcomes[2] == 30
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[1].args == (-2,)


async def test_a_failed_write_fails_its_batch_only() -> None:
    calls = 0

    async def write(items: Sequence[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("connection lost")
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(write, writers=1)
    with pytest.raises(OSError, match="connection lost"):
        await group.submit(1)
    assert await group.submit(2) == 2  # the writer goes on


async def test_a_request_that_went_away_does_not_stop_the_others() -> None:
    write = Recorder()
    group: GroupCommit[int, int] = GroupCommit(write, writers=1)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    gone, kept = asyncio.ensure_future(group.submit(2)), asyncio.ensure_future(group.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    write.release.set()
    assert (await first, await kept) == (10, 30)
    assert gone.cancelled()
    assert write.batches == [[1], [3]]  # the one that went away was not written


# -- token issues ----------------------------------------------------------------------------


class AllQueued:
    """Counts the requests that reach the group commit; writes begun before ``expected`` have
    arrived wait for the rest, so that those queue behind them (as under load) whatever the
    timing of the machine."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, expected: int) -> None:
        self.arrived = 0
        self.all_in = asyncio.Event()
        submit = GroupCommit.submit

        async def counted(group: GroupCommit[Any, Any], item: Any) -> Any:
            self.arrived += 1
            if self.arrived >= expected:
                self.all_in.set()
            return await submit(group, item)

        monkeypatch.setattr(GroupCommit, "submit", counted)

    async def wait(self) -> None:
        await asyncio.wait_for(self.all_in.wait(), 10)


async def _issued_events(runtime: Runtime) -> list[str | None]:
    """The request ids of the ``token.issued`` events, once the whole trail is checked."""
    async with runtime.sessions() as session:
        report = await audit.verify_chain(session)
        assert report.ok, report
        query = select(col(AuditEvent.request_id)).where(AuditEvent.action == "token.issued")
        return list((await session.execute(query)).scalars())


async def _count(runtime: Runtime, model: Any) -> int:
    async with runtime.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_concurrent_issues_share_transactions_and_each_gets_its_answer(
    http: httpx.AsyncClient,
    runtime: Runtime,
    worker: Worker,
    make_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twenty-four concurrent issues, among them two refused (a verification still pending, and
    another client's): fewer transactions than requests, and each request its own answer, a
    distinct live token or its problem, with one audit event per token in a chain that holds."""
    cid, key = await make_client("test", level="L1")
    _, other_key = await make_client("test", level="L1", name="Other")
    vids = [(await verified(http, key, worker, **new_person()))["id"] for _ in range(11)]
    pending = (await start(http, key, worker, **new_person(level="L2")))["id"]
    foreign = (await verified(http, other_key, worker, **new_person()))["id"]
    batches: list[int] = []
    real = tokens.issue_all

    async def counted(session: Any, rt: Runtime, asked: Sequence[Any], **kw: Any) -> list[Any]:
        batches.append(len(asked))
        await queued.wait()
        return await real(session, rt, asked, **kw)

    monkeypatch.setattr(tokens, "issue_all", counted)
    asked = [*vids, *vids, pending, foreign]
    queued = AllQueued(monkeypatch, len(asked))
    answers = await asyncio.gather(
        *(http.post(f"/v1/verifications/{vid}/tokens", headers=auth(key)) for vid in asked)
    )
    assert [r.status_code for r in answers] == [201] * 22 + [409, 404]
    assert answers[-2].json()["code"] == "verification_not_verified"
    assert answers[-1].json()["code"] == "not_found"
    # Every request written (one whose row another batch held is written again alone), in
    # fewer transactions than requests.
    assert sum(batches) >= len(asked)
    assert max(batches) > 1
    assert len(batches) < len(asked)
    issued = [r.json() for r in answers[:22]]
    assert [a["verification_id"] for a in issued] == [*vids, *vids]
    assert len({a["access_token"] for a in issued}) == 22
    for answer in issued[::5]:
        claims = await introspect(http, key, answer["access_token"])
        assert (claims["active"], claims["client_id"]) == (True, cid)
    assert await _count(runtime, ServiceToken) == 22
    request_ids = await _issued_events(runtime)
    # Each event carries its own request's id, not the id of the request that began the batch.
    assert len(request_ids) == len(set(request_ids)) == 22


async def test_a_batch_that_fails_as_a_whole_is_written_one_by_one(
    http: httpx.AsyncClient,
    runtime: Runtime,
    worker: Worker,
    make_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transaction that fails for the whole batch (here: every batch of more than one, as a
    deadlock or a lost connection would) leaves each request to its own transaction: all are
    answered, each token written once."""
    _, key = await make_client("test", level="L1")
    vids = [(await verified(http, key, worker, **new_person()))["id"] for _ in range(6)]
    real = tokens.issue_all
    sizes: list[int] = []

    async def failing_when_grouped(
        session: Any, rt: Runtime, asked: Sequence[Any], **kw: Any
    ) -> list[Any]:
        sizes.append(len(asked))
        await queued.wait()
        written = await real(session, rt, asked, **kw)
        if len(asked) > 1:
            raise OperationalError("INSERT", {}, Exception("deadlock detected"))
        return written

    monkeypatch.setattr(tokens, "issue_all", failing_when_grouped)
    queued = AllQueued(monkeypatch, 12)
    answers = await asyncio.gather(
        *(http.post(f"/v1/verifications/{vid}/tokens", headers=auth(key)) for vid in vids * 2)
    )
    assert [r.status_code for r in answers] == [201] * 12
    assert max(sizes) > 1  # some batch did fail, and its requests were retried alone
    assert await _count(runtime, ServiceToken) == 12
    async with runtime.sessions() as session:
        assert (await audit.verify_chain(session)).ok


async def test_a_failed_commit_is_every_requests_error_and_nothing_is_issued_twice(
    http: httpx.AsyncClient,
    runtime: Runtime,
    worker: Worker,
    make_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether a commit that failed took effect is unknown: the batch's requests get the error
    (as a request of its own would), and none is issued again in a transaction of its own."""
    cid, key = await make_client("test", level="L1")
    vids = [(await verified(http, key, worker, **new_person()))["id"] for _ in range(3)]
    async with runtime.sessions() as session:
        client = await session.get(Client, cid)
    assert client is not None
    calls: list[int] = []
    real_all, real_scope = tokens.issue_all, session_scope

    async def counted(session: Any, rt: Runtime, asked: Sequence[Any], **kw: Any) -> list[Any]:
        calls.append(len(asked))
        return await real_all(session, rt, asked, **kw)

    @asynccontextmanager
    async def commit_fails(factory: Any) -> AsyncIterator[Any]:
        async with real_scope(factory) as session:
            yield session
            raise OperationalError("COMMIT", {}, Exception("connection lost"))

    monkeypatch.setattr(tokens, "issue_all", counted)
    monkeypatch.setattr(tokens, "session_scope", commit_fails)
    asked = [tokens.IssueRequest(client, vid) for vid in vids]
    with pytest.raises(OperationalError, match="connection lost"):
        await tokens.issue_batch(runtime, asked)
    assert calls == [3]  # written once, not again one by one
    assert await _count(runtime, ServiceToken) == 0


async def test_one_write_grants_some_and_refuses_others(
    http: httpx.AsyncClient, runtime: Runtime, worker: Worker, make_client: Any
) -> None:
    """One batch, written directly: a refused item (unknown, another client's, not verified)
    takes nothing from the granted ones, and the transaction holds only their writes."""
    cid, key = await make_client("test", level="L1")
    _, other_key = await make_client("test", level="L1", name="Other")
    good = (await verified(http, key, worker, **new_person()))["id"]
    foreign = (await verified(http, other_key, worker, **new_person()))["id"]
    pending = (await start(http, key, worker, **new_person(level="L2")))["id"]
    async with runtime.sessions() as session:
        client = await session.get(Client, cid)
    assert client is not None
    asked = [
        tokens.IssueRequest(client, vid, f"req-{i}")
        for i, vid in enumerate([good, "ver_missing", foreign, pending, good])
    ]
    async with session_scope(runtime.sessions) as session:
        outcomes = await tokens.issue_all(session, runtime, asked)
    codes = [o.code if isinstance(o, ProblemError) else "issued" for o in outcomes]
    assert codes == ["issued", "not_found", "not_found", "verification_not_verified", "issued"]
    granted = [o for o in outcomes if isinstance(o, tokens.Issued)]
    assert granted[0].jti != granted[1].jti
    assert sorted(str(r) for r in await _issued_events(runtime)) == ["req-0", "req-4"]
    assert await _count(runtime, ServiceToken) == 2


# -- a row held by another transaction (PostgreSQL's row locks) -------------------------------


@pytest.fixture(scope="module")
def locks_database(settings: Settings) -> Iterator[str]:
    with scratch_postgres(settings, "realname_scale_tokens") as url:
        yield url


@pytest.fixture
async def locks_runtime(settings: Settings, locks_database: str) -> AsyncIterator[Runtime]:
    rt = build_runtime(settings.model_copy(update={"database_url": locks_database}))
    rt.start()
    yield rt
    await rt.close()


async def test_a_row_held_elsewhere_holds_up_only_its_own_request(
    locks_runtime: Runtime,
) -> None:
    """A batch waits for no row another transaction holds: the other requests are written at
    once, and the held one alone once the row is free. (A batch that waited while holding
    its other rows could close a lock cycle, and would hold up every request in it.)"""
    rt = locks_runtime
    async with session_scope(rt.sessions) as session:
        client, key = await clients.create_client(
            session, rt.master_key, name="Locks", mode="test", default_level="L1"
        )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime=rt)), base_url="http://testserver"
    ) as http:
        worker = Worker(rt)
        vids = [(await verified(http, key, worker, **new_person()))["id"] for _ in range(3)]
    asked = [tokens.IssueRequest(client, vid, f"req-{i}") for i, vid in enumerate(vids)]
    async with rt.engine.connect() as holder:
        await holder.execute(
            text("SELECT id FROM verifications WHERE id = :id FOR UPDATE"), {"id": vids[0]}
        )
        batch = asyncio.create_task(tokens.issue_batch(rt, asked))
        for _ in range(100):  # the two free requests commit while the row is held
            if await _count(rt, ServiceToken) == 2:
                break
            await asyncio.sleep(0.05)
        assert await _count(rt, ServiceToken) == 2
        assert not batch.done()  # the held one waits, alone
        await holder.rollback()
    outcomes = await asyncio.wait_for(batch, 10)
    assert [type(o) for o in outcomes] == [tokens.Issued] * 3
    assert await _count(rt, ServiceToken) == 3
    assert sorted(str(r) for r in await _issued_events(rt)) == ["req-0", "req-1", "req-2"]
