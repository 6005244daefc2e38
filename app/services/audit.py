"""The audit trail: append-only, hash-chained, PII-free, anchored outside its database.

Each link is an HMAC-SHA-256 under a versioned key that never sits in the database
(``REALNAME_AUDIT_KEYS``, or a key derived from ``REALNAME_SECRET_KEY``), so someone with write
access to the database alone cannot re-chain edited events. Rows written before keyed chaining
(``key_version`` empty) keep their plain SHA-256 links and stay verifiable; none may follow a
keyed row. **Signed checkpoints** (Ed25519 over the head's seq, hash and time, under a key that
is not in the database either) are written elsewhere (``realname audit checkpoint``, or by the
worker to a directory); ``verify_chain(..., checkpoints=…)`` then also catches events removed
from the tail with the head rewound, which no chain alone can show.

Events form several chains (``REALNAME_AUDIT_CHAINS``, one head row each), so concurrent
writers do not queue behind one row: a writer locks whichever head no other transaction holds
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; only when every head is taken does it wait for one,
and a new chain is started while fewer than the configured number exist). Within a chain,
events are gap-free (``chain_seq``) in commit order; SQLite serialises writers anyway
(``BEGIN IMMEDIATE``) and so keeps to one chain. A transaction keeps the chain it locked for its
later events. A checkpoint signs every chain's head at one instant, so what one chain alone
could not show (its tail removed and its head rewound) the checkpoint does, for each chain.
The lock is held only for the short tail of a transaction: slow work (hashing, provider
calls) happens before any audit event is written.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select

from app.db import insert_ignoring_conflicts
from app.logging import request_id_var
from app.models import Admin, AuditEvent, AuditHead, Client
from app.models._types import utcnow

GENESIS = "0" * 64
#: ``session.info`` key under which a runtime's sessions carry the chain keys by version.
AUDIT_KEYS = "audit_keys"
#: ``session.info`` key: how many chains writers may spread over (``REALNAME_AUDIT_CHAINS``).
AUDIT_CHAINS = "audit_chains"
#: ``session.info`` key of the chain head this session's current transaction holds.
_HELD = "audit_held_head"
CHECKPOINT_TYPE = "realname.audit-checkpoint"

#: Keys that may never appear in an audit event's data (defence in depth: callers pass ids and
#: codes only).
_FORBIDDEN_KEYS = frozenset({"real_name", "id_number", "phone", "code", "name", "password"})


def _canonical(event: AuditEvent, data: Mapping[str, Any]) -> bytes:
    # "seq" is the position in the chain. Chain 1 is the chain of every event written before
    # there were several, and its events keep the form they were linked in (no "chain").
    fields: dict[str, Any] = {} if event.key_version is None else {"key_version": event.key_version}
    if event.chain != 1:
        fields["chain"] = event.chain
    return json.dumps(
        {
            **fields,
            "seq": event.chain_seq,
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


# The write path's statements, built once: building them per event (the CTE's values above
# all) took about a third of an L1 registration's request-handling CPU.
_HEADS = select(AuditHead).execution_options(populate_existing=True)
#: The lowest-numbered head among the first ``chains`` that no other transaction holds.
_FREE_HEAD = (
    _HEADS.where(col(AuditHead.id) <= bindparam("chains"))
    .order_by(col(AuditHead.id))
    .limit(1)
    .with_for_update(skip_locked=True)
)
_HEAD = _HEADS.where(col(AuditHead.id) == bindparam("chain")).with_for_update()
_HEAD_UNLESS_HELD = _HEADS.where(col(AuditHead.id) == bindparam("chain")).with_for_update(
    skip_locked=True
)
_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
_EVENT_COLUMNS = tuple(c.name for c in _EVENTS.columns if c.name != "seq")
#: PostgreSQL: an event's INSERT that moves its chain's head in a data-modifying CTE.
_APPEND_MOVING_HEAD = (
    _EVENTS.insert()
    .values({name: bindparam(f"event_{name}") for name in _EVENT_COLUMNS})
    .returning(_EVENTS.c.seq)
    .add_cte(
        update(AuditHead)
        .where(col(AuditHead.id) == bindparam("head_id"))
        .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"))
        .returning(col(AuditHead.id))
        .cte("moved_head")
    )
)


class Chains:
    """How many chains writers may spread over (``REALNAME_AUDIT_CHAINS``), and how many this
    process has seen started: one per runtime, shared by its sessions."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        #: Chains known to exist: tried in turn (1, 2, …) when every chain seen is held.
        self.started = 0


def _chains(session: AsyncSession) -> Chains:
    chains = session.info.get(AUDIT_CHAINS)
    if session.get_bind().dialect.name == "sqlite" or not isinstance(chains, Chains):
        return Chains(1)  # SQLite serialises writers itself: more chains would buy nothing
    return chains


def _transaction_key(session: AsyncSession) -> tuple[object, object]:
    sync = session.sync_session
    return sync.get_transaction(), sync.get_nested_transaction()


async def _lock_head(session: AsyncSession) -> AuditHead:
    """The head this transaction holds (locked by its first event), else the lowest-numbered
    free one, locked now.

    Chains are started one at a time, only when every existing one is held by another
    transaction: a quiet deployment writes chain 1 only, a busy one as many chains as it has
    concurrent writers, up to the limit; past it, a writer waits for a head chosen at random."""
    held = session.info.get(_HELD)
    if held is not None and held[0] == _transaction_key(session):
        head: AuditHead = held[1]
        return head
    chains = _chains(session)
    found = None
    if chains.limit > 1:
        found = (await session.execute(_FREE_HEAD, {"chains": chains.limit})).scalar_one_or_none()
    while found is None and chains.started < chains.limit:
        chains.started += 1
        found = await _lock_chain(session, chains.started, wait=chains.limit == 1)
    if found is None:
        chain = random.randint(1, chains.limit)  # noqa: S311 (spreads waiters; not secret)
        found = await _lock_chain(session, chain)
    assert found is not None  # waited for
    session.info[_HELD] = (_transaction_key(session), found)
    return found


async def _lock_chain(session: AsyncSession, chain: int, *, wait: bool = True) -> AuditHead | None:
    """Lock ``chain``'s head, starting the chain (from the genesis hash) if it has none; with
    ``wait`` false, None when another transaction holds it."""
    locked = _HEAD if wait else _HEAD_UNLESS_HELD
    head = (await session.execute(locked, {"chain": chain})).scalar_one_or_none()
    if head is None:
        await session.execute(
            insert_ignoring_conflicts(session, AuditHead, ["id"]).values(
                id=chain, seq=0, hash=GENESIS
            )
        )
        head = (await session.execute(locked, {"chain": chain})).scalar_one_or_none()
    return head


async def lock_trail(session: AsyncSession) -> None:
    """Hold chain 1's head until the transaction ends: serialises rare actions (emergency
    measures) with each other; this transaction's events then go to chain 1."""
    head = await _lock_chain(session, 1)
    assert head is not None  # waited for
    session.info[_HELD] = (_transaction_key(session), head)


@dataclass(frozen=True)
class Entry:
    """One event to append (see :func:`record`)."""

    action: str
    subject_type: str
    subject_id: str | None
    actor_type: str
    actor_id: str | None
    data: Mapping[str, Any] | None = None
    #: The request the event belongs to; None: the current request's (``request_id_var``).
    request_id: str | None = None


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
    """Append one event to a chain inside the caller's transaction."""
    entry = Entry(action, subject_type, subject_id, actor_type, actor_id, data)
    return (await record_all(session, [entry]))[0]


async def record_all(session: AsyncSession, entries: Sequence[Entry]) -> list[AuditEvent]:
    """Append ``entries``, in order, to one chain inside the caller's transaction, under one
    head lock (a group commit's events): one statement for one event on PostgreSQL, one
    ``INSERT`` and the head's ``UPDATE`` for several."""
    keys = chain_keys(session)
    payloads = [dict(entry.data or {}) for entry in entries]
    for payload in payloads:
        if leaked := _FORBIDDEN_KEYS.intersection(payload):
            raise ValueError(f"audit data may not carry personal fields: {sorted(leaked)}")
    head = await _lock_head(session)
    now, current_request = utcnow(), request_id_var.get()
    written: list[AuditEvent] = []
    prev_hash, seq = head.hash, head.seq
    for entry, payload in zip(entries, payloads, strict=True):
        seq += 1
        event = AuditEvent(
            chain=head.id,
            chain_seq=seq,
            occurred_at=now,
            actor_type=entry.actor_type,
            actor_id=entry.actor_id,
            action=entry.action,
            subject_type=entry.subject_type,
            subject_id=entry.subject_id,
            data=json.dumps(payload, sort_keys=True, separators=(",", ":")),
            request_id=entry.request_id or current_request,
            key_version=max(keys),
            prev_hash=prev_hash,
            hash="",
        )
        event.hash = prev_hash = compute_hash(prev_hash, event, keys) or ""
        written.append(event)
    if not written:
        return written
    if session.get_bind().dialect.name != "postgresql" or len(written) > 1:
        # Through the session: the events in one INSERT (its "insertmanyvalues", compiled once),
        # the head in one UPDATE. (A multi-row VALUES clause would be compiled on every call.)
        head.seq, head.hash = seq, prev_hash
        session.add_all(written)
        await session.flush()
        return written
    # One round trip: the event's INSERT moves its chain's head in a data-modifying CTE. The
    # caller's pending changes are flushed first, as a flush of the event would have done.
    await session.flush()
    (event,) = written
    params = {f"event_{name}": getattr(event, name) for name in _EVENT_COLUMNS}
    params.update(head_id=head.id, head_seq=seq, head_hash=prev_hash)
    event.seq = (await session.execute(_APPEND_MOVING_HEAD, params)).scalar_one()
    # The head row already says so: keep the loaded head in step without a second UPDATE.
    set_committed_value(head, "seq", seq)
    set_committed_value(head, "hash", prev_hash)
    return written


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
    #: The row number of the first event that does not hold (or that follows a missing one).
    first_broken_seq: int | None = None
    problem: str | None = None
    checkpoints: int = 0
    chains: int = 0
    #: Where the break is: the chain and the position in it (also for events that are gone).
    chain: int | None = None
    position: int | None = None


def _checkpoint_heads(doc: Mapping[str, Any]) -> list[tuple[int, int, str]]:
    """(chain, position, hash) of each head a checkpoint signed; a checkpoint from before there
    were several chains signed chain 1's."""
    if "chains" in doc:
        return [(int(h["chain"]), int(h["seq"]), str(h["hash"])) for h in doc["chains"]]
    return [(1, int(doc["seq"]), str(doc["hash"]))]


async def verify_chain(
    session: AsyncSession,
    *,
    batch: int = 5000,
    checkpoints: Sequence[Mapping[str, Any]] = (),
    public_keys: Mapping[int, Ed25519PublicKey] | None = None,
) -> ChainReport:
    """Recompute every link of every chain; report the first event whose hash or link does not
    hold, an event missing from its chain, or a chain shorter than its head says.

    Each of ``checkpoints`` (already read from files) must carry a valid signature under
    ``public_keys`` and name, for each chain, an event that still exists with the hash it had
    then."""
    keys = chain_keys(session)
    expected: dict[tuple[int, int], str] = {}
    for doc in checkpoints:
        problem = checkpoint_problem(doc, public_keys or {})
        if problem is not None:
            return ChainReport(False, 0, None, problem)
        for chain, position, digest in _checkpoint_heads(doc):
            if expected.get((chain, position), digest) != digest:
                return ChainReport(
                    False,
                    0,
                    None,
                    "two checkpoints disagree about this event",
                    0,
                    0,
                    chain,
                    position,
                )
            expected[(chain, position)] = digest
    heads = {h.id: h for h in (await session.execute(select(AuditHead))).scalars()}
    used = (await session.execute(select(AuditEvent.chain).distinct())).scalars()
    chains = sorted(set(heads) | set(used) | {chain for chain, _ in expected})
    checked = 0

    def broken(seq: int | None, problem: str, chain: int, position: int) -> ChainReport:
        return ChainReport(
            False, checked, seq, problem, len(expected), len(chains), chain, position
        )

    for chain in chains:
        if expected.get((chain, 0), GENESIS) != GENESIS:
            return broken(None, "a checkpoint disagrees with the empty chain", chain, 0)
        prev = GENESIS
        last = 0
        keyed_seen = False
        while True:
            query = (
                select(AuditEvent)
                .where(AuditEvent.chain == chain, col(AuditEvent.chain_seq) > last)
                .order_by(col(AuditEvent.chain_seq))
                .limit(batch)
            )
            rows = (await session.execute(query)).scalars().all()
            if not rows:
                break
            for event in rows:
                if event.chain_seq != last + 1:
                    return broken(event.seq, "event missing from the chain", chain, last + 1)
                if event.prev_hash != prev:
                    return broken(
                        event.seq, "link to the previous event broken", chain, event.chain_seq
                    )
                if event.key_version is None and keyed_seen:
                    return broken(
                        event.seq, "an unkeyed link after keyed ones", chain, event.chain_seq
                    )
                keyed_seen = keyed_seen or event.key_version is not None
                link = compute_hash(prev, event, keys)
                if link is None:
                    return broken(
                        event.seq,
                        "the event's chain key version is not configured",
                        chain,
                        event.chain_seq,
                    )
                if not hmac.compare_digest(link, event.hash):
                    return broken(
                        event.seq, "event content does not match its hash", chain, event.chain_seq
                    )
                if expected.get((chain, event.chain_seq), event.hash) != event.hash:
                    return broken(
                        event.seq, "event differs from a signed checkpoint", chain, event.chain_seq
                    )
                prev = event.hash
                last = event.chain_seq
                checked += 1
        if any(c == chain and position > last for c, position in expected):
            return broken(
                None, "events covered by a signed checkpoint were removed", chain, last + 1
            )
        head = heads.get(chain)
        if head is None and last > 0:
            return broken(None, "the chain's head was removed", chain, last)
        if head is not None and (head.seq != last or head.hash != prev):
            return broken(None, "events after the last one were removed", chain, last + 1)
    return ChainReport(True, checked, checkpoints=len(expected), chains=len(chains))


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
    heads: Sequence[tuple[int, int, str]], created_at: datetime, seeds: Mapping[int, bytes]
) -> dict[str, Any]:
    """A checkpoint of every chain's head, ``(chain, position, hash)``, signed with the newest
    checkpoint key; ``seq`` is how many events the chains hold together."""
    version = max(seeds)
    private = signing_keys(seeds)[version]
    doc: dict[str, Any] = {
        "type": CHECKPOINT_TYPE,
        "seq": sum(position for _, position, _ in heads),
        "chains": [
            {"chain": chain, "seq": position, "hash": digest}
            for chain, position, digest in sorted(heads)
        ],
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
        heads = doc.get("chains", [doc])
        for head in heads:
            seq, digest = head["seq"], head["hash"]
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
    """Sign the heads of every chain, read at one instant (one statement)."""
    heads = [
        (h.id, h.seq, h.hash)
        for h in (await session.execute(select(AuditHead).order_by(col(AuditHead.id)))).scalars()
    ]
    return sign_checkpoint(heads or [(1, 0, GENESIS)], now or utcnow(), seeds)
