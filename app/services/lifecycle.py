"""The lifecycle of a verification as data, and the one write that enforces it.

- :data:`LIFECYCLE`: every move between statuses the service makes, and what makes it; and
  :data:`MOVES`, the same as a table (from-status -> allowed to-statuses). Nothing else may
  happen: :func:`transition` refuses any other move with :class:`IllegalMove` (a bug, never a
  client's error). The README's lifecycle diagram and table are generated from it (run
  ``python -m app.services.lifecycle README.md`` after changing it).
- :func:`after_checks`: the pure decision "what comes after these check results" (the next
  status and its reason, or wait, perhaps for another run of the checks).
- :func:`record_check`: the one write of a check's status.
- :func:`transition`: an ``UPDATE … WHERE status IN (expected)``: when two actors race (a worker
  and a code check, two processes), exactly one wins and the other sees :class:`StaleState`.
  Every move writes its audit event and emits its event in the same transaction.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select

from app import metrics
from app.errors import StaleState as StaleState  # re-exported: callers catch lifecycle.StaleState
from app.hotcache import tokens_changed
from app.models import AuditEvent, Check, Status, Verification
from app.models._types import utcnow
from app.services import audit, events, tokens
from app.settings import Settings
from app.verifiers.base import CheckOutcome

#: States in which the sealed subject is still needed (checks running, codes being sent, a
#: reviewer's approval that resumes the flow with a code). `realname purge` wipes it from
#: verifications left in review longer than the purge period.
NEEDS_SUBJECT = frozenset({Status.PENDING, Status.AWAITING_CODE, Status.NEEDS_REVIEW})
#: The check that a code proves; every other check is an automated one, run before it.
CODE_CHECK: Final = "sms_otp"


@dataclass(frozen=True, slots=True)
class Move:
    """One row of the lifecycle: from any of ``sources`` to ``to``, and what makes that move."""

    sources: frozenset[Status]
    to: Status
    when: str


def _move(sources: Iterable[Status], to: Status, when: str) -> Move:
    return Move(frozenset(sources), to, when)


#: Every move the service makes, in the order the README lists them.
LIFECYCLE: Final[tuple[Move, ...]] = (
    _move(
        [Status.PENDING],
        Status.AWAITING_CODE,
        "the automated checks passed and the level asks for a code: it is sent",
    ),
    _move([Status.PENDING], Status.VERIFIED, "the checks passed and the level asks for no code"),
    _move(
        [Status.PENDING],
        Status.REJECTED,
        "a check failed (its reason code), or the network identity's person is another user "
        "of the client",
    ),
    _move(
        [Status.PENDING],
        Status.NEEDS_REVIEW,
        "a check got no answer after its retries, or for a reason retrying will not cure",
    ),
    _move([Status.AWAITING_CODE], Status.VERIFIED, "the right code was submitted"),
    _move([Status.AWAITING_CODE], Status.LOCKED, "the code's attempts are spent"),
    _move(
        [Status.NEEDS_REVIEW], Status.VERIFIED, "a reviewer approves, and no code is (still) needed"
    ),
    _move(
        [Status.NEEDS_REVIEW],
        Status.AWAITING_CODE,
        "a reviewer approves, and the level still asks for a code: it is sent",
    ),
    _move([Status.NEEDS_REVIEW], Status.REJECTED, "a reviewer rejects"),
    _move(
        [Status.PENDING, Status.AWAITING_CODE],
        Status.EXPIRED,
        "unfinished past its expiry (seen by the worker, or by a code tried too late), or "
        "purged unfinished (`realname purge`)",
    ),
    _move(
        [Status.PENDING, Status.AWAITING_CODE, Status.NEEDS_REVIEW],
        Status.REVOKED,
        "a newer verification of the same user supersedes it, or an admin revokes it",
    ),
    _move(
        [Status.VERIFIED],
        Status.REVOKED,
        "an admin revokes it, or the user's correction is verified",
    ),
    _move(
        [s for s in Status if s != Status.ERASED],
        Status.ERASED,
        "the person's data is erased (Art. 43): a tombstone is left",
    ),
)

#: The table of allowed moves: from-status -> the statuses it may move to.
MOVES: Final[Mapping[Status, frozenset[Status]]] = MappingProxyType(
    {status: frozenset(m.to for m in LIFECYCLE if status in m.sources) for status in Status}
)


class IllegalMove(RuntimeError):
    """A move that :data:`MOVES` does not allow was asked for: a bug in the caller, never a
    client's error (it is not a ProblemError, so it answers 500 and is logged)."""


def sources_of(to: Status) -> frozenset[Status]:
    """Every status the table allows to move to ``to``."""
    return frozenset(s for s, targets in MOVES.items() if to in targets)


def check_moves(expect: Iterable[Status], to: Status) -> frozenset[Status]:
    """``expect`` as a set, once every move from it to ``to`` is in the table.

    Raises:
        IllegalMove: one of them is not (or ``expect`` is empty).
    """
    expected = frozenset(Status(s) for s in expect)
    illegal = sorted(s.value for s in expected if to not in MOVES[s])
    if illegal or not expected:
        raise IllegalMove(f"{', '.join(illegal) or 'nothing'} -> {to.value} is not a move")
    return expected


@dataclass(frozen=True, slots=True)
class Next:
    """What comes after a verification's check results (:func:`after_checks`)."""

    #: The status to move to; ``None``: stay (wait).
    status: Status | None
    reason: str | None = None
    #: What the move's audit event tells besides the reason (the check that decided it).
    data: Mapping[str, Any] = field(default_factory=dict)
    #: While waiting: seconds until the checks should run again, if they should.
    retry_in: float | None = None


WAIT: Final = Next(None)


def after_checks(
    status: Status, checks: Iterable[Check], settings: Settings, *, no_retry: Collection[str] = ()
) -> Next:
    """What comes after the check results of a verification in ``status``; pure.

    In order: a failed check decides (``locked`` for the code, ``rejected`` with its reason for
    the others; the first in ``checks`` order); then a check that got no answer: another run
    ``check_retry_backoff_seconds * 2**(attempts-1)`` from now, or ``needs_review`` once
    ``check_max_attempts`` runs are spent or its reason is in ``no_retry``; then an automated
    check still to run means wait; once all passed, ``verified`` if there is no code to prove
    (or it was proven), else ``awaiting_code``. Reaching the status it is in is waiting.
    """
    decided = _decide(list(checks), settings, no_retry)
    return WAIT if decided.status == status else decided


def _decide(checks: list[Check], settings: Settings, no_retry: Collection[str]) -> Next:
    for check in checks:
        if check.status == CheckOutcome.FAILED:
            if check.type == CODE_CHECK:
                return Next(Status.LOCKED, check.reason)
            return Next(Status.REJECTED, check.reason, {"check": check.type})
    for check in checks:
        if check.status == CheckOutcome.UNAVAILABLE:
            reason = check.reason or "unavailable"
            if reason in no_retry or check.attempts >= settings.check_max_attempts:
                data = {"check": check.type, "attempts": check.attempts}
                return Next(Status.NEEDS_REVIEW, reason, data)
            backoff = settings.check_retry_backoff_seconds
            return Next(None, retry_in=backoff * 2 ** (check.attempts - 1))
    if any(c.status != CheckOutcome.PASSED for c in checks if c.type != CODE_CHECK):
        return WAIT
    code = next((c for c in checks if c.type == CODE_CHECK), None)
    if code is None or code.status == CheckOutcome.PASSED:
        return Next(Status.VERIFIED)
    return Next(Status.AWAITING_CODE)


def record_check(
    check: Check,
    outcome: CheckOutcome,
    *,
    reason: str | None = None,
    attempts: int | None = None,
    verifier: str | None = None,
    billable: bool = False,
    provider_reference: str | None = None,
) -> None:
    """Write a check's status (the one place that does): its ``outcome`` and ``reason``; the
    number of ``attempts`` when given; and, when a ``verifier`` answered, its name, whether it
    bills (once billed, a check stays billable) and its reference. Flushed with the session."""
    check.status = outcome.value
    check.reason = reason
    check.updated_at = utcnow()
    if attempts is not None:
        check.attempts = attempts
    if verifier is not None:
        check.verifier = verifier
        check.billable = check.billable or billable
        check.provider_reference = provider_reference


def verified_until(settings: Settings) -> datetime:
    return utcnow() + timedelta(days=settings.verified_validity_days)


#: The user's other verified verifications (retired by the one that just passed): built once.
_USERS_OTHER_VERIFIED = select(Verification).where(
    col(Verification.client_id) == bindparam("client_id"),
    col(Verification.external_user_id) == bindparam("external_user_id"),
    col(Verification.status) == Status.VERIFIED.value,
    col(Verification.id) != bindparam("verification_id"),
)


@functools.cache
def _guarded_move(columns: tuple[str, ...]) -> Any:
    """:func:`transition`'s guarded ``UPDATE`` of ``columns``, built once per set of columns:
    bound parameters ``verification_id``, ``expected`` (the statuses it may move from) and
    ``new_<column>``."""
    table = Verification.__table__  # type: ignore[attr-defined]
    return (
        update(table)
        .where(
            table.c.id == bindparam("verification_id"),
            table.c.status.in_(bindparam("expected", expanding=True)),
        )
        .values({name: bindparam(f"new_{name}") for name in columns})
    )


async def transition(
    session: AsyncSession,
    verification: Verification,
    to: Status,
    *,
    expect: Iterable[Status] | None = None,
    reason: str | None = None,
    actor_type: str = "system",
    actor_id: str | None = None,
    data: dict[str, Any] | None = None,
    valid_until: datetime | None = None,
) -> AuditEvent:
    """Move ``verification`` to ``to`` if it is in one of ``expect`` (by default, any status the
    table allows to move to ``to``); audit it and emit its ``verification.<status>`` event in
    the same transaction, and return the audit event.

    Raises:
        IllegalMove: a move from one of ``expect`` to ``to`` is not in :data:`MOVES`.
        StaleState: the verification is in none of ``expect`` (someone moved it first).

    Side effects that belong to every such move happen here, once:
    - leaving the states that need the sealed subject wipes it;
    - leaving ``verified`` revokes the verification's tokens at once;
    - reaching ``verified`` sets how long it holds (``valid_until``) and retires the
      verification it corrects, if any.
    """
    expected = check_moves(sources_of(to) if expect is None else expect, to)
    values: dict[str, Any] = {"status": to.value, "status_reason": reason, "updated_at": utcnow()}
    if to not in NEEDS_SUBJECT:
        values["sealed_subject"] = None
    if to == Status.VERIFIED and valid_until is not None:
        values["expires_at"] = valid_until
    result = await session.execute(
        _guarded_move(tuple(values)),
        {
            "verification_id": verification.id,
            "expected": [s.value for s in expected],
            **{f"new_{k}": v for k, v in values.items()},
        },
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleState(verification.id)
    metrics.TRANSITIONS.labels(to.value).inc()
    previous = verification.status
    if Status.VERIFIED in expected and to != Status.VERIFIED:
        # The status is part of what introspection caches: tell other processes after commit
        # whatever the in-memory ``previous`` says.
        tokens_changed(session)
    for key, value in values.items():
        # Already written by the guarded UPDATE: the ORM must not write it again at flush.
        set_committed_value(verification, key, value)
    event = await audit.record(
        session,
        action=f"verification.{to.value}",
        subject_type="verification",
        subject_id=verification.id,
        actor_type=actor_type,
        actor_id=actor_id,
        data={"from": previous, "reason": reason, **(data or {})},
    )
    if to in events.ANNOUNCED_STATUSES:
        await events.emit(
            session,
            client_id=verification.client_id,
            type=f"verification.{to.value}",
            verification=verification,
            reason=reason,
        )
    if previous == Status.VERIFIED and to != Status.VERIFIED:
        await tokens.revoke_for_verification(session, verification.id, reason or to.value)
    if to == Status.VERIFIED:
        # One verified verification per user: the one that just passed retires the others.
        corrected = (
            await session.execute(
                _USERS_OTHER_VERIFIED,
                {
                    "client_id": verification.client_id,
                    "external_user_id": verification.external_user_id,
                    "verification_id": verification.id,
                },
            )
        ).scalars()
        for old in list(corrected):
            await transition(
                session,
                old,
                Status.REVOKED,
                expect=[Status.VERIFIED],
                reason="corrected",
                data={"corrected_by": verification.id},
            )
    return event


async def expire_due(session: AsyncSession, *, limit: int = 200) -> int:
    """Move unfinished verifications past their ``expires_at`` to ``expired`` (wiping the sealed
    copy). Run by the worker; each move is guarded, so racing workers cannot double it."""
    due = (
        await session.execute(
            select(Verification)
            .where(
                col(Verification.status).in_([Status.PENDING.value, Status.AWAITING_CODE.value]),
                col(Verification.expires_at) < utcnow(),
            )
            .limit(limit)
        )
    ).scalars()
    moved = 0
    for verification in list(due):
        try:
            await transition(
                session,
                verification,
                Status.EXPIRED,
                expect=[Status.PENDING, Status.AWAITING_CODE],
                reason="verification_expired",
            )
            moved += 1
        except StaleState:
            continue
    return moved


async def follow(
    session: AsyncSession,
    verification: Verification,
    decision: Next,
    settings: Settings,
    *,
    reason: str | None = None,
    actor_type: str = "system",
    actor_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent | None:
    """Make the move ``decision`` names from the status the verification is in (the one the
    decision was taken on), with ``reason`` instead of the decision's when given; nothing when
    it says wait. Reaching ``verified`` holds for ``verified_validity_days``."""
    if decision.status is None:
        return None
    return await transition(
        session,
        verification,
        decision.status,
        expect=[Status(verification.status)],
        reason=reason or decision.reason,
        actor_type=actor_type,
        actor_id=actor_id,
        data={**decision.data, **(data or {})},
        valid_until=verified_until(settings),
    )


README_START: Final = "<!-- lifecycle:start (python -m app.services.lifecycle README.md) -->"
README_END: Final = "<!-- lifecycle:end -->"


def readme_block() -> str:
    """The README's lifecycle diagram and table of moves, between their markers, from
    :data:`LIFECYCLE`."""
    edges = [
        f"    {source.value} --> {move.to.value}"
        for move in LIFECYCLE
        for source in Status
        if source in move.sources
    ]
    rows = [f"| {_sources_cell(move)} | `{move.to.value}` | {move.when} |" for move in LIFECYCLE]
    return "\n".join(
        [
            README_START,
            "```mermaid",
            "stateDiagram-v2",
            f"    [*] --> {Status.PENDING.value}",
            *edges,
            "```",
            "",
            "| from | to | when |",
            "|---|---|---|",
            *rows,
            README_END,
        ]
    )


def _sources_cell(move: Move) -> str:
    if move.sources == set(Status) - {move.to}:
        return "any other"
    return ", ".join(f"`{s.value}`" for s in Status if s in move.sources)


def write_readme(text: str) -> str:
    """``text`` (a README) with its lifecycle block replaced by the current one."""
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    return text[:start] + readme_block() + text[end:]


def main(argv: list[str]) -> int:
    """Print the README's lifecycle block, or with a path, rewrite that file's block."""
    if not argv:
        print(readme_block())
        return 0
    with open(argv[0], encoding="utf-8") as file:
        text = file.read()
    with open(argv[0], "w", encoding="utf-8") as file:
        file.write(write_readme(text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
