"""The audit trail: append-only, hash-chained, PII-free, anchored outside its database.

Each link is an HMAC-SHA-256 under a versioned key that never sits in the database
(``REALNAME_AUDIT_KEYS``, or a key derived from ``REALNAME_SECRET_KEY``), so someone with write
access to the database alone cannot re-chain edited events. Rows written before keyed chaining
(``key_version`` empty) keep their plain SHA-256 links and stay verifiable; none may follow a
keyed row. **Signed checkpoints** (Ed25519 over the head's seq, hash and time, under a key that
is not in the database either) are written elsewhere (``realname audit checkpoint``, or by the
worker to a directory); ``verify_chain(..., checkpoints=…)`` then also catches events removed
from the tail with the head rewound, which no chain alone can show.

Every writer locks the chain head (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite serialises
writers with ``BEGIN IMMEDIATE``), so events form one gap-free chain in commit order. The lock
is held only for the short tail of a transaction: slow work (hashing, provider calls) happens
before any audit event is written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.logging import request_id_var
from app.models import Admin, AuditEvent, AuditHead, Client
from app.models._types import utcnow

GENESIS = "0" * 64
#: ``session.info`` key under which a runtime's sessions carry the chain keys by version.
AUDIT_KEYS = "audit_keys"
CHECKPOINT_TYPE = "realname.audit-checkpoint"

#: Keys that may never appear in an audit event's data (defence in depth: callers pass ids and
#: codes only).
_FORBIDDEN_KEYS = frozenset({"real_name", "id_number", "phone", "code", "name", "password"})


def _canonical(event: AuditEvent, data: Mapping[str, Any]) -> bytes:
    fields: dict[str, Any] = {} if event.key_version is None else {"key_version": event.key_version}
    return json.dumps(
        {
            **fields,
            "seq": event.seq,
            "occurred_at": event.occurred_at.isoformat(),
            "actor_type": event.actor_type,
            "actor_id": event.actor_id,
            "action": event.action,
            "subject_type": event.subject_type,
            "subject_id": event.subject_id,
            "data": data,
            "request_id": event.request_id,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode()


def chain_keys(session: AsyncSession) -> Mapping[int, bytes]:
    """The chain keys the session's runtime was built with (never from the database)."""
    keys = session.info.get(AUDIT_KEYS)
    if not keys:
        raise RuntimeError("this session carries no audit chain key (build it from a Runtime)")
    return dict(keys)


def compute_hash(prev_hash: str, event: AuditEvent, keys: Mapping[int, bytes]) -> str | None:
    """The link of ``event``; None when its key version is unknown here."""
    message = prev_hash.encode() + b"\n" + _canonical(event, json.loads(event.data))
    if event.key_version is None:
        return hashlib.sha256(message).hexdigest()
    key = keys.get(event.key_version)
    if key is None:
        return None
    return hmac.new(key, message, hashlib.sha256).hexdigest()


async def record(
    session: AsyncSession,
    *,
    action: str,
    subject_type: str,
    subject_id: str | None,
    actor_type: str,
    actor_id: str | None,
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain inside the caller's transaction."""
    payload = dict(data or {})
    keys = chain_keys(session)
    if leaked := _FORBIDDEN_KEYS.intersection(payload):
        raise ValueError(f"audit data may not carry personal fields: {sorted(leaked)}")
    locked = select(AuditHead).where(AuditHead.id == 1).with_for_update()
    head = (await session.execute(locked)).scalar_one_or_none()
    if head is None:
        # The migration seeds the head; if it was removed, recreate it without racing.
        await session.execute(
            text(
                "INSERT INTO audit_head (id, seq, hash) SELECT 1, 0, :genesis "
                "WHERE NOT EXISTS (SELECT 1 FROM audit_head WHERE id = 1)"
            ),
            {"genesis": GENESIS},
        )
        head = (await session.execute(locked)).scalar_one()
    event = AuditEvent(
        seq=head.seq + 1,
        occurred_at=utcnow(),
        actor_type=actor_type,
        actor_id=actor_id,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        data=json.dumps(payload, sort_keys=True, separators=(",", ":")),
        request_id=request_id_var.get(),
        key_version=max(keys),
        prev_hash=head.hash,
        hash="",
    )
    event.hash = compute_hash(head.hash, event, keys) or ""
    head.seq, head.hash = event.seq, event.hash
    session.add(event)
    await session.flush()
    return event


# -- reads -----------------------------------------------------------------------------------


async def events(
    session: AsyncSession,
    *,
    before_seq: int | None = None,
    action: str | None = None,
    action_prefix: str | None = None,
    subject_id: str | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Newest first; ``before_seq`` pages backwards (events with a smaller seq)."""
    query = select(AuditEvent)
    if before_seq is not None:
        query = query.where(col(AuditEvent.seq) < before_seq)
    if action:
        query = query.where(AuditEvent.action == action)
    if action_prefix:
        query = query.where(col(AuditEvent.action).startswith(action_prefix))
    if subject_id:
        query = query.where(AuditEvent.subject_id == subject_id)
    limit = max(1, min(limit, 500))
    return list(
        (await session.execute(query.order_by(col(AuditEvent.seq).desc()).limit(limit))).scalars()
    )


async def timeline(session: AsyncSession, subject_id: str) -> list[AuditEvent]:
    """Every event about ``subject_id``, oldest first."""
    query = select(AuditEvent).where(AuditEvent.subject_id == subject_id)
    return list((await session.execute(query.order_by(col(AuditEvent.seq)))).scalars())


async def actions(session: AsyncSession) -> list[str]:
    """The actions the trail holds, sorted (a filter's choices)."""
    return sorted((await session.execute(select(AuditEvent.action).distinct())).scalars())


async def actor_names(session: AsyncSession, ids: Iterable[str | None]) -> dict[str, str]:
    """Usernames of the admins and names of the clients among events' actors."""
    names: dict[str, str] = {}
    wanted = set(ids)
    admin_ids = [i for i in wanted if i and i.startswith("adm_")]
    client_ids = [i for i in wanted if i and i.startswith("cli_")]
    if admin_ids:
        query = select(Admin.id, Admin.username).where(col(Admin.id).in_(admin_ids))
        names.update({aid: name for aid, name in (await session.execute(query)).all()})
    if client_ids:
        query = select(Client.id, Client.name).where(col(Client.id).in_(client_ids))
        names.update({cid: name for cid, name in (await session.execute(query)).all()})
    return names


def event_out(event: AuditEvent) -> dict[str, Any]:
    """An event as the admin API and pages show it."""
    return {
        "seq": event.seq,
        "occurred_at": event.occurred_at,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "action": event.action,
        "subject_type": event.subject_type,
        "subject_id": event.subject_id,
        "data": json.loads(event.data),
        "hash": event.hash,
    }


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    problem: str | None = None
    head_seq: int = 0
    head_hash: str = GENESIS
    checkpoints: int = 0


async def verify_chain(
    session: AsyncSession,
    *,
    batch: int = 5000,
    checkpoints: Sequence[Mapping[str, Any]] = (),
    public_keys: Mapping[int, Ed25519PublicKey] | None = None,
) -> ChainReport:
    """Recompute every link; report the first event whose hash or link does not hold.

    Each of ``checkpoints`` (already read from files) must carry a valid signature under
    ``public_keys`` and name an event that still exists with the hash it had then."""
    keys = chain_keys(session)
    expected: dict[int, str] = {}
    for doc in checkpoints:
        problem = checkpoint_problem(doc, public_keys or {})
        if problem is not None:
            return ChainReport(False, 0, None, problem)
        seq, digest = int(doc["seq"]), str(doc["hash"])
        if expected.get(seq, digest) != digest:
            return ChainReport(False, 0, seq, "two checkpoints disagree about this event")
        expected[seq] = digest
    if expected.get(0, GENESIS) != GENESIS:
        return ChainReport(False, 0, 0, "a checkpoint disagrees with the empty chain")
    prev = GENESIS
    expected_seq = 1
    checked = 0
    last_seq = 0
    keyed_seen = False

    def broken(seq: int | None, problem: str) -> ChainReport:
        return ChainReport(False, checked, seq, problem, checkpoints=len(expected))

    while True:
        rows = (
            (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.seq > last_seq)
                    .order_by(col(AuditEvent.seq))
                    .limit(batch)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            break
        for event in rows:
            if event.seq != expected_seq:
                return broken(expected_seq, "event missing from the chain")
            if event.prev_hash != prev:
                return broken(event.seq, "link to the previous event broken")
            if event.key_version is None and keyed_seen:
                return broken(event.seq, "an unkeyed link after keyed ones")
            keyed_seen = keyed_seen or event.key_version is not None
            link = compute_hash(prev, event, keys)
            if link is None:
                return broken(event.seq, "the event's chain key version is not configured")
            if not hmac.compare_digest(link, event.hash):
                return broken(event.seq, "event content does not match its hash")
            if expected.get(event.seq, event.hash) != event.hash:
                return broken(event.seq, "event differs from a signed checkpoint")
            prev = event.hash
            expected_seq += 1
            checked += 1
            last_seq = event.seq
    beyond = [seq for seq in expected if seq > last_seq]
    if beyond:
        return broken(last_seq + 1, "events covered by a signed checkpoint were removed")
    head = await session.get(AuditHead, 1)
    if head is not None and (head.seq != last_seq or head.hash != prev):
        return broken(last_seq + 1, "events after the last one were removed")
    return ChainReport(True, checked, head_seq=last_seq, head_hash=prev, checkpoints=len(expected))


# -- signed checkpoints ------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_keys(seeds: Mapping[int, bytes]) -> dict[int, Ed25519PrivateKey]:
    return {v: Ed25519PrivateKey.from_private_bytes(seed) for v, seed in seeds.items()}


def public_keys(seeds: Mapping[int, bytes]) -> dict[int, Ed25519PublicKey]:
    return {v: k.public_key() for v, k in signing_keys(seeds).items()}


def public_key_text(key: Ed25519PublicKey) -> str:
    return _b64url(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _signed_part(doc: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_checkpoint(
    seq: int, digest: str, created_at: datetime, seeds: Mapping[int, bytes]
) -> dict[str, Any]:
    """A checkpoint of the chain at ``seq`` signed with the newest checkpoint key."""
    version = max(seeds)
    private = signing_keys(seeds)[version]
    doc: dict[str, Any] = {
        "type": CHECKPOINT_TYPE,
        "seq": seq,
        "hash": digest,
        "created_at": created_at.isoformat().replace("+00:00", "Z"),
        "key_version": version,
        "public_key": public_key_text(private.public_key()),
    }
    doc["signature"] = _b64url(private.sign(_signed_part(doc)))
    return doc


def checkpoint_problem(doc: Mapping[str, Any], keys: Mapping[int, Ed25519PublicKey]) -> str | None:
    """None when ``doc`` is a checkpoint signed by one of ``keys``; else what is wrong."""
    try:
        if doc.get("type") != CHECKPOINT_TYPE:
            return "not an audit checkpoint"
        seq, digest = doc["seq"], doc["hash"]
        if not isinstance(seq, int) or seq < 0 or not isinstance(digest, str):
            return "checkpoint fields are malformed"
        key = keys.get(int(doc["key_version"]))
        if key is None or public_key_text(key) != doc["public_key"]:
            return "checkpoint signed by a key that is not configured here"
        key.verify(_b64url_decode(str(doc["signature"])), _signed_part(doc))
    except InvalidSignature:
        return "checkpoint signature does not verify"
    except (KeyError, TypeError, ValueError):
        return "checkpoint fields are malformed"
    return None


async def checkpoint(
    session: AsyncSession, seeds: Mapping[int, bytes], now: datetime | None = None
) -> dict[str, Any]:
    """Sign the current head of the chain."""
    head = await session.get(AuditHead, 1)
    seq, digest = (head.seq, head.hash) if head is not None else (0, GENESIS)
    return sign_checkpoint(seq, digest, now or utcnow(), seeds)
