"""The audit trail anchored outside its database: keyed links and signed checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlmodel import col, select

from app.models import AuditEvent
from app.runtime import Runtime
from app.services import audit
from tests.conftest import auth
from tests.support import run_cli
from tests.test_intake import GOOD

OTHERS = ["440305199003071236", "310104200002290030", "11010519491231002X"]


async def _grow_chain(http: httpx.AsyncClient, api_key: str, n: int = 3) -> None:
    for i in range(n):
        await http.post(
            "/v1/verifications",
            json={**GOOD, "external_user_id": f"u{i}", "id_number": OTHERS[i]},
            headers=auth(api_key),
        )


def _checkpoint(runtime: Runtime, path: Path) -> dict[str, object]:
    done = run_cli(runtime.settings, "audit", "checkpoint", "--output", str(path))
    assert done.returncode == 0, done.stderr
    doc: dict[str, object] = json.loads(path.read_text())
    return doc


def _verify(runtime: Runtime, *checkpoints: Path) -> tuple[int, dict[str, object]]:
    args = [a for p in checkpoints for a in ("--checkpoint", str(p))]
    done = run_cli(runtime.settings, "audit", "verify", *args)
    return done.returncode, json.loads(done.stdout)


async def _rechain_without_keys(runtime: Runtime) -> None:
    """What someone with write access to the database but not the keys can do: recompute
    every link as plain SHA-256 and move the head along."""
    async with runtime.sessions() as session:
        events = list(
            (await session.execute(select(AuditEvent).order_by(col(AuditEvent.seq)))).scalars()
        )
        prev = audit.GENESIS
        for event in events:
            event.key_version = None
            event.prev_hash = prev
            event.hash = audit.compute_hash(prev, event, {}) or ""
            prev = event.hash
        await session.execute(
            text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"),
            {"s": events[-1].seq, "h": prev},
        )
        await session.commit()


async def test_new_events_are_keyed_links(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    """Events carry the chain key's version, and their hash is not a plain SHA-256."""
    await _grow_chain(http, api_key, 1)
    async with runtime.sessions() as session:
        event = (await session.execute(select(AuditEvent).limit(1))).scalars().one()
    assert event.key_version == max(runtime.settings.audit_chain_keys)
    assert audit.compute_hash(event.prev_hash, event, {}) is None


async def test_checkpoint_is_signed_and_verifies(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, tmp_path: Path
) -> None:
    """`audit checkpoint` signs the head; `audit verify --checkpoint` accepts an untouched chain."""
    await _grow_chain(http, api_key)
    doc = _checkpoint(runtime, tmp_path / "cp.json")
    code, report = _verify(runtime, tmp_path / "cp.json")
    assert code == 0, report
    assert report["checkpoints"] == 1
    assert doc["seq"] == report["checked"]


async def test_removed_tail_with_rewound_head_is_caught_by_a_checkpoint(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, tmp_path: Path
) -> None:
    """Deleting the newest event and rewinding the head passes the chain but not the checkpoint."""
    await _grow_chain(http, api_key)
    _checkpoint(runtime, tmp_path / "cp.json")
    async with runtime.engine.begin() as conn:
        last = (await conn.execute(text("SELECT max(seq) FROM audit_events"))).scalar_one()
        prev = (
            await conn.execute(
                text("SELECT hash FROM audit_events WHERE seq = :s"), {"s": last - 1}
            )
        ).scalar_one()
        await conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": last})
        await conn.execute(
            text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"),
            {"s": last - 1, "h": prev},
        )
    assert _verify(runtime)[0] == 0  # the chain alone cannot tell
    code, report = _verify(runtime, tmp_path / "cp.json")
    assert code == 1
    assert (report["chain"], report["position"]) == (1, last)
    assert "removed" in str(report["problem"])


async def test_edited_and_rechained_event_is_caught_by_a_checkpoint(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, tmp_path: Path
) -> None:
    """Editing an event and re-chaining everything after it is caught."""
    await _grow_chain(http, api_key)
    _checkpoint(runtime, tmp_path / "cp.json")
    async with runtime.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_events SET action = 'x.forged' WHERE seq = 2"))
    await _rechain_without_keys(runtime)
    code, report = _verify(runtime, tmp_path / "cp.json")
    assert code == 1
    assert report["first_broken_seq"] is not None


async def test_keyed_link_cannot_be_recomputed_without_the_key(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    """Re-chaining one edited event as plain SHA-256 after keyed ones is a break."""
    await _grow_chain(http, api_key)
    async with runtime.sessions() as session:
        events = list(
            (await session.execute(select(AuditEvent).order_by(col(AuditEvent.seq)))).scalars()
        )
        tail = events[-1]
        tail.action = "x.forged"
        tail.key_version = None
        tail.hash = audit.compute_hash(tail.prev_hash, tail, {}) or ""
        await session.execute(
            text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": tail.hash}
        )
        await session.commit()
    code, report = _verify(runtime)
    assert code == 1
    assert report["first_broken_seq"] == tail.seq


async def test_forged_checkpoint_is_refused(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, tmp_path: Path
) -> None:
    """A checkpoint whose fields were changed after signing fails verification."""
    await _grow_chain(http, api_key)
    doc = _checkpoint(runtime, tmp_path / "cp.json")
    doc["seq"] = 1
    (tmp_path / "cp.json").write_text(json.dumps(doc))
    code, report = _verify(runtime, tmp_path / "cp.json")
    assert code == 1
    assert report["problem"] == "checkpoint signature does not verify"


async def test_old_links_stay_verifiable_after_a_chain_key_rotation(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, tmp_path: Path
) -> None:
    """With a second chain key added, events under key 1 and key 2 both verify."""
    import base64

    await _grow_chain(http, api_key, 1)
    old = base64.urlsafe_b64encode(runtime.settings.audit_chain_keys[1]).decode()
    new = base64.urlsafe_b64encode(b"n" * 32).decode()
    rotated = {"REALNAME_AUDIT_KEYS": f"1:{old},2:{new}"}
    done = run_cli(runtime.settings, "audit", "checkpoint", "-o", str(tmp_path / "a.json"))
    assert done.returncode == 0
    made = run_cli(
        runtime.settings, "clients", "create", "--name", "B", "--mode", "test", **rotated
    )
    assert made.returncode == 0, made.stderr
    async with runtime.engine.connect() as conn:
        versions = (
            await conn.execute(text("SELECT key_version FROM audit_events ORDER BY seq"))
        ).scalars()
        assert set(versions) == {1, 2}
    done = run_cli(
        runtime.settings, "audit", "verify", "--checkpoint", str(tmp_path / "a.json"), **rotated
    )
    assert done.returncode == 0, done.stdout


async def test_worker_writes_checkpoints_to_the_configured_directory(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime, tmp_path: Path
) -> None:
    """With a checkpoint directory set, the worker writes one that `audit verify` accepts,
    and waits the configured interval before the next."""
    from app.runtime import build_runtime
    from app.worker import Worker

    await _grow_chain(http, api_key, 1)
    settings = runtime.settings.model_copy(update={"audit_checkpoint_dir": tmp_path / "cps"})
    rt = build_runtime(settings)
    try:
        worker = Worker(rt)
        first = await worker.checkpoint_if_due()
        again = await worker.checkpoint_if_due()
    finally:
        await rt.close()
    assert first is not None
    assert again is None
    code, report = _verify(runtime, first)
    assert code == 0, report
