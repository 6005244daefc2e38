"""Several audit chains: concurrent writers do not queue behind one head, and `audit verify`
still proves every chain (links, gaps, truncated tails, signed checkpoints of every head).

On a PostgreSQL database of this module's own (``realname_scale_*``), whatever the rest of the
suite runs on: SQLite serialises writers itself and keeps to one chain."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from alembic import command
from app.migrate import alembic_config
from app.models import AuditEvent
from app.runtime import Runtime, build_runtime
from app.services import audit
from app.settings import Settings
from tests.support import run_cli, scratch_postgres

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def chains_database(settings: Settings) -> Iterator[str]:
    with scratch_postgres(settings, "realname_scale_audit") as url:
        yield url


@pytest.fixture
async def chains_runtime(settings: Settings, chains_database: str) -> AsyncIterator[Runtime]:
    rt = build_runtime(
        settings.model_copy(
            update={"database_url": chains_database, "audit_chains": 4, "redis_url": None}
        )
    )
    async with rt.engine.begin() as conn:
        await conn.execute(text("TRUNCATE audit_events, audit_head RESTART IDENTITY"))
    yield rt
    await rt.close()


async def _record(session: AsyncSession, n: int) -> AuditEvent:
    return await audit.record(
        session,
        action="test.event",
        subject_type="test",
        subject_id=f"t{n}",
        actor_type="system",
        actor_id=None,
    )


async def _hold(rt: Runtime, n: int, recorded: asyncio.Event, release: asyncio.Event) -> int:
    """Record one event, keep the transaction open until told, commit; the chain used."""
    async with rt.sessions() as session:
        event = await _record(session, n)
        recorded.set()
        await release.wait()
        await session.commit()
        chain: int = event.chain
        return chain


async def _writers_at_once(rt: Runtime, n: int) -> tuple[list[bool], list[int]]:
    """Start ``n`` writers that each hold their transaction open; which of them got to record
    while all the others still held theirs, and the chains they used."""
    release = asyncio.Event()
    recorded = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(_hold(rt, i, recorded[i], release)) for i in range(n)]
    await asyncio.sleep(0)
    done = await asyncio.wait([asyncio.create_task(e.wait()) for e in recorded], timeout=3)
    at_once = [e.is_set() for e in recorded]
    assert done is not None
    release.set()
    return at_once, list(await asyncio.gather(*tasks))


async def _verify(rt: Runtime, *checkpoints: dict[str, object]) -> audit.ChainReport:
    public = audit.public_keys(rt.settings.audit_checkpoint_seeds)
    async with rt.sessions() as session:
        return await audit.verify_chain(session, checkpoints=checkpoints, public_keys=public)


async def _checkpoint(rt: Runtime) -> dict[str, object]:
    async with rt.sessions() as session:
        return await audit.checkpoint(session, rt.settings.audit_checkpoint_seeds)


async def test_concurrent_writers_do_not_wait_for_each_other(chains_runtime: Runtime) -> None:
    """Four transactions that each hold an audit event uncommitted all record at once, on four
    chains; every chain verifies afterwards."""
    at_once, used = await _writers_at_once(chains_runtime, 4)
    assert all(at_once)
    assert sorted(used) == [1, 2, 3, 4]
    report = await _verify(chains_runtime)
    assert report.ok, report
    assert (report.checked, report.chains) == (4, 4)


async def test_past_the_limit_a_writer_waits_for_a_chain(chains_runtime: Runtime) -> None:
    """With every chain held, a fifth writer waits until one is free, and no fifth chain starts."""
    at_once, used = await _writers_at_once(chains_runtime, 5)
    assert sum(at_once) == 4
    assert set(used) == {1, 2, 3, 4}
    async with chains_runtime.sessions() as session:
        heads = (await session.execute(text("SELECT count(*) FROM audit_head"))).scalar_one()
    assert heads == 4
    assert (await _verify(chains_runtime)).ok


async def test_a_transaction_keeps_its_chain_for_all_its_events(chains_runtime: Runtime) -> None:
    """The events of one transaction sit next to each other in one chain."""
    await _writers_at_once(chains_runtime, 3)
    async with chains_runtime.sessions() as session:
        events = [await _record(session, i) for i in range(3)]
        await session.commit()
    assert len({e.chain for e in events}) == 1
    positions = [e.chain_seq for e in events]
    assert positions == list(range(positions[0], positions[0] + 3))
    assert (await _verify(chains_runtime)).ok


async def test_an_event_removed_from_one_chain_is_caught_there(chains_runtime: Runtime) -> None:
    """Deleting an event in the middle of one chain names that chain and position."""
    for _ in range(2):
        await _writers_at_once(chains_runtime, 3)
    async with chains_runtime.engine.begin() as conn:
        victim = (
            await conn.execute(
                text("SELECT seq, chain FROM audit_events WHERE chain = 2 AND chain_seq = 1")
            )
        ).one()
        await conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": victim.seq})
    report = await _verify(chains_runtime)
    assert not report.ok
    assert (report.chain, report.position) == (2, 1)
    assert report.problem == "event missing from the chain"


async def test_a_truncated_chain_is_caught_by_a_checkpoint_of_every_head(
    chains_runtime: Runtime,
) -> None:
    """Removing one chain's newest event and rewinding its head passes the chains alone, but not
    a checkpoint taken before: it signed every chain's head."""
    await _writers_at_once(chains_runtime, 3)
    await _writers_at_once(chains_runtime, 3)
    doc = await _checkpoint(chains_runtime)
    assert [h["chain"] for h in doc["chains"]] == [1, 2, 3]  # type: ignore[attr-defined]
    assert doc["seq"] == 6
    async with chains_runtime.engine.begin() as conn:
        tail = (
            await conn.execute(
                text(
                    "SELECT seq, chain_seq, prev_hash FROM audit_events WHERE chain = 3 "
                    "ORDER BY chain_seq DESC LIMIT 1"
                )
            )
        ).one()
        await conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": tail.seq})
        await conn.execute(
            text("UPDATE audit_head SET seq = :p, hash = :h WHERE id = 3"),
            {"p": tail.chain_seq - 1, "h": tail.prev_hash},
        )
    assert (await _verify(chains_runtime)).ok  # the chains alone cannot tell
    report = await _verify(chains_runtime, doc)
    assert not report.ok
    assert (report.chain, report.position) == (3, tail.chain_seq)
    assert "removed" in str(report.problem)


async def test_a_chain_removed_whole_is_caught_by_a_checkpoint(chains_runtime: Runtime) -> None:
    """Deleting a whole chain (its events and its head) is caught by a checkpoint naming it."""
    await _writers_at_once(chains_runtime, 2)
    doc = await _checkpoint(chains_runtime)
    async with chains_runtime.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_events WHERE chain = 2"))
        await conn.execute(text("DELETE FROM audit_head WHERE id = 2"))
    assert (await _verify(chains_runtime)).ok
    report = await _verify(chains_runtime, doc)
    assert (report.ok, report.chain, report.position) == (False, 2, 1)


async def test_a_head_removed_under_its_chain_is_caught(chains_runtime: Runtime) -> None:
    """A chain whose events are there but whose head row is gone does not verify."""
    await _writers_at_once(chains_runtime, 2)
    async with chains_runtime.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_head WHERE id = 2"))
    report = await _verify(chains_runtime)
    assert (report.ok, report.chain, report.problem) == (
        False,
        2,
        "the chain's head was removed",
    )


async def test_a_checkpoint_from_before_several_chains_still_verifies(
    chains_runtime: Runtime,
) -> None:
    """A checkpoint in the one-chain form (chain 1's seq and hash at top level) is read as
    chain 1's head and verifies; tampering with chain 1 behind it is caught."""
    async with chains_runtime.sessions() as session:
        for i in range(3):
            await _record(session, i)
        await session.commit()
    seeds = chains_runtime.settings.audit_checkpoint_seeds
    new = await _checkpoint(chains_runtime)
    head = new["chains"][0]  # type: ignore[index]
    old: dict[str, object] = {
        k: v for k, v in new.items() if k not in ("chains", "signature", "seq")
    }
    old.update(seq=head["seq"], hash=head["hash"])
    private = audit.signing_keys(seeds)[int(str(old["key_version"]))]
    old["signature"] = audit._b64url(private.sign(audit._signed_part(old)))
    assert (await _verify(chains_runtime, old)).ok
    async with chains_runtime.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_events SET action = 'x' WHERE chain_seq = 3"))
    assert not (await _verify(chains_runtime, old)).ok


async def test_the_cli_reports_every_chain(
    chains_runtime: Runtime, chains_database: str, tmp_path: Path
) -> None:
    """`realname audit checkpoint` signs every chain's head and `audit verify` accepts it."""
    await _writers_at_once(chains_runtime, 3)
    env = {"REALNAME_DATABASE_URL": chains_database}
    path = tmp_path / "cp.json"
    made = run_cli(chains_runtime.settings, "audit", "checkpoint", "-o", str(path), **env)
    assert made.returncode == 0, made.stderr
    assert len(json.loads(path.read_text())["chains"]) == 3
    done = run_cli(chains_runtime.settings, "audit", "verify", "--checkpoint", str(path), **env)
    report = json.loads(done.stdout)
    assert (done.returncode, report["chains"], report["checked"]) == (0, 3, 3)


@pytest.fixture
def premigration_database(settings: Settings) -> Iterator[str]:
    with scratch_postgres(settings, "realname_scale_audit_migration") as url:
        yield url


async def test_events_of_the_single_chain_verify_after_the_migration(
    settings: Settings, premigration_database: str
) -> None:
    """Events stored before migration 0012 (one chain, ``seq`` their position, no chain
    columns) verify after it, and new events continue chain 1 from its head."""
    migrated = settings.model_copy(
        update={"database_url": premigration_database, "redis_url": None}
    )
    await asyncio.to_thread(command.downgrade, alembic_config(migrated), "0011")
    rt = build_runtime(migrated)
    try:
        keys = migrated.audit_chain_keys
        prev = audit.GENESIS
        async with rt.engine.begin() as conn:
            for seq in (1, 2, 3):
                event = AuditEvent(
                    seq=seq,
                    chain=1,
                    chain_seq=seq,
                    actor_type="system",
                    action="old",
                    subject_type="test",
                    key_version=max(keys),
                    prev_hash=prev,
                    hash="",
                )
                event.hash = audit.compute_hash(prev, event, keys) or ""
                await conn.execute(
                    text(
                        "INSERT INTO audit_events (seq, occurred_at, actor_type, action, "
                        "subject_type, data, key_version, prev_hash, hash) VALUES (:seq, "
                        ":at, 'system', 'old', 'test', '{}', :kv, :prev, :hash)"
                    ),
                    {
                        "seq": seq,
                        "at": event.occurred_at,
                        "kv": event.key_version,
                        "prev": prev,
                        "hash": event.hash,
                    },
                )
                prev = event.hash
            await conn.execute(
                text("UPDATE audit_head SET seq = 3, hash = :h WHERE id = 1"), {"h": prev}
            )
        await asyncio.to_thread(command.upgrade, alembic_config(migrated), "head")
        async with rt.sessions() as session:
            added = await _record(session, 4)
            await session.commit()
        assert (added.chain, added.chain_seq, added.seq) == (1, 4, 4)
        report = await _verify(rt)
        assert (report.ok, report.checked, report.chains) == (True, 4, 1), report
    finally:
        await rt.close()
