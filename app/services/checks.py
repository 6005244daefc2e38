"""Running a verification's automated checks (ID registry, carrier) and moving it on.

Called by the outbox worker for a ``run_checks`` job. Verifiers run outside any transaction;
their results are recorded, and the verification moved, in one short transaction guarded on
the ``pending`` state, so a retried or duplicated job cannot move it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import select

from app import metrics
from app.db import session_scope
from app.models import Check, Client, OutboxJob, Status, Verification
from app.models._types import utcnow
from app.services import codes, costs, emergency, lifecycle, outbox
from app.services.runtime import Runtime
from app.services.verifications import checks_of
from app.verifiers.base import CheckOutcome, CheckResult, Subject, run_check
from app.verifiers.network_identity import NetworkIdentityResult

logger = logging.getLogger(__name__)

AUTOMATED = ("id_registry", "carrier_3e")
#: Unavailable reasons that retrying soon will not cure: straight to manual review.
NO_RETRY = frozenset(
    {
        "registry_quota_exceeded",
        "phone_unsupported",
        "provider_auth_failed",
        "provider_quarantined",
        "provider_bad_request",
    }
)


async def _load(
    runtime: Runtime, verification_id: str
) -> tuple[Verification, Client, list[Check], Subject] | None:
    async with session_scope(runtime.sessions) as session:
        verification = await session.get(Verification, verification_id)
        if (
            verification is None
            or verification.status != Status.PENDING
            or verification.sealed_subject is None
        ):
            return None
        client = await session.get(Client, verification.client_id)
        assert client is not None
        checks = list(
            (
                await session.execute(select(Check).where(Check.verification_id == verification_id))
            ).scalars()
        )
        subject = Subject.open(
            runtime.master_key, verification.sealed_subject, verification.id.encode()
        )
    return verification, client, checks, subject


@dataclass(frozen=True, slots=True)
class Answer:
    """A check's result and the verifier that gave it."""

    verifier: str
    result: CheckResult


async def _ask_chain(
    runtime: Runtime,
    client: Client,
    check_type: str,
    subject: Subject,
    *,
    attempt_key: str,
    verification_id: str,
    quarantine: Collection[str] = (),
) -> Answer:
    """Ask the verifiers of the chain in order. Only ``unavailable`` (a provider down, its
    breaker open, out of quota, ...) passes the check on to the next one: a definite answer is
    final, so a mismatch from one provider is never asked again elsewhere, and no provider is
    billed after another has answered. A quarantined verifier (Art. 25) is not called: it
    counts as ``unavailable`` / ``provider_quarantined``, so the chain moves on. The last
    verifier's answer stands when all are down."""
    chain = runtime.verifiers.chain(client.mode, check_type)
    answer: Answer | None = None
    for position, verifier in enumerate(chain):
        if verifier.name in quarantine:  # Art. 25: not called; the next one or a person decides
            result = CheckResult(CheckOutcome.UNAVAILABLE, "provider_quarantined")
        else:
            result = await run_check(
                verifier, subject, attempt_key=f"{attempt_key}:{verifier.name}"
            )
        answer = Answer(verifier.name, result)
        metrics.CHECKS.labels(
            check_type, verifier.name, result.outcome.value, result.reason or ""
        ).inc()
        if result.billable:
            costs.record_billable(runtime.settings, verifier.name, client.id)
        logger.info(
            "check finished",
            extra={
                "verification_id": verification_id,
                "check": check_type,
                "verifier": verifier.name,
                "outcome": result.outcome.value,
                "reason": result.reason,
            },
        )
        if result.outcome is not CheckOutcome.UNAVAILABLE or position == len(chain) - 1:
            break
        metrics.FAILOVERS.labels(check_type, verifier.name, result.reason or "").inc()
    assert answer is not None  # a chain has at least one verifier
    return answer


def runs_inline(runtime: Runtime, mode: str) -> bool:
    """Whether a ``mode`` client's automated checks run in the registration's own transaction:
    every verifier of every automated check answers in process (``inline``), and
    ``REALNAME_INLINE_CHECKS`` is on."""
    return runtime.settings.inline_checks and all(
        getattr(verifier, "inline", False)
        for check_type in AUTOMATED
        for verifier in runtime.verifiers.chain(mode, check_type)
    )


async def _ask_all(
    runtime: Runtime,
    client: Client,
    verification_id: str,
    checks: Iterable[Check],
    subject: Subject,
    quarantine: Collection[str],
) -> dict[str, Answer]:
    """Ask the pending automated checks in level order, stopping at the first that does not
    pass."""
    by_type = {c.type: c for c in checks}
    results: dict[str, Answer] = {}
    for check_type in AUTOMATED:
        check = by_type.get(check_type)
        if check is None or check.status == "passed":
            continue
        answer = await _ask_chain(
            runtime,
            client,
            check_type,
            subject,
            attempt_key=f"{verification_id}:{check_type}:{check.attempts + 1}",
            verification_id=verification_id,
            quarantine=quarantine,
        )
        results[check_type] = answer
        if answer.result.outcome is not CheckOutcome.PASSED:
            break
    return results


async def run_now(
    session: AsyncSession,
    runtime: Runtime,
    client: Client,
    verification: Verification,
    checks: list[Check],
    subject: Subject,
) -> bool:
    """Run a new verification's checks in the caller's transaction (its verifiers answer in
    process: :func:`runs_inline`), record them and move it on, as the worker would; True when
    that queued a job due now (the code's SMS)."""
    quarantine = await emergency.quarantined(session)
    answers = await _ask_all(runtime, client, verification.id, checks, subject, quarantine)
    return await _apply(session, runtime, verification, checks, answers, subject, client)


async def process(runtime: Runtime, verification_id: str, *, job_id: str | None = None) -> bool:
    """Run the pending automated checks in level order, then record and transition. True when
    that queued a job due now (the code's SMS). ``job_id``: the outbox job this run is, marked
    done in the transaction that records the results (so that a job this run queues is never
    seen before it is done), or on its own when there is nothing to run."""
    loaded = await _load(runtime, verification_id)
    if loaded is None:
        if job_id is not None:
            async with session_scope(runtime.sessions) as session:
                await outbox.finish(session, job_id)
        return False
    verification, client, checks, subject = loaded
    async with runtime.sessions() as session:
        quarantine = await emergency.quarantined(session)
    results = await _ask_all(runtime, client, verification.id, checks, subject, quarantine)
    async with session_scope(runtime.sessions) as session:
        if job_id is not None:
            await outbox.finish(session, job_id)
        try:
            return await _record(session, runtime, verification_id, results, subject)
        except lifecycle.StaleState:
            logger.info(
                "verification moved on meanwhile", extra={"verification_id": verification_id}
            )
            return False


def record_answer(check: Check, verifier: str, result: CheckResult | NetworkIdentityResult) -> None:
    """Record a verifier's answer on its check: one more run, by ``verifier``."""
    lifecycle.record_check(
        check,
        result.outcome,
        reason=result.reason,
        attempts=check.attempts + 1,
        verifier=verifier,
        billable=result.billable,
        provider_reference=result.provider_reference,
    )


async def settle(
    session: AsyncSession,
    runtime: Runtime,
    verification: Verification,
    checks: Iterable[Check],
    *,
    job_kind: str = "run_checks",
    no_retry: frozenset[str] = NO_RETRY,
) -> lifecycle.Next:
    """Decide what comes after the recorded ``checks`` (:func:`lifecycle.after_checks`) and
    make the moves every check job makes alike: ``rejected``; ``needs_review`` once the runs
    are spent or the reason is one retrying will not cure; or another run (``job_kind``)
    queued with exponential back-off. The other moves (``verified``, ``awaiting_code``) need
    more of the caller (binding a person, sending a code): it gets the decision to make them."""
    decision = lifecycle.after_checks(
        Status(verification.status), checks, runtime.settings, no_retry=no_retry
    )
    if decision.retry_in is not None:
        outbox.queue(
            session,
            OutboxJob(
                kind=job_kind,
                verification_id=verification.id,
                run_after=utcnow() + timedelta(seconds=decision.retry_in),
            ),
            wake=decision.retry_in <= 0,
        )
        await session.flush()
    elif decision.status in (Status.REJECTED, Status.NEEDS_REVIEW):
        await lifecycle.follow(session, verification, decision, runtime.settings)
    return decision


async def _record(
    session: AsyncSession,
    runtime: Runtime,
    verification_id: str,
    answers: dict[str, Answer],
    subject: Subject,
) -> bool:
    """Record ``answers`` and move the verification on; True when that queued a job due now
    (the code's SMS, or a run of the checks without back-off)."""
    verification = await session.get(Verification, verification_id, with_for_update=True)
    if verification is None or verification.status != Status.PENDING:
        return False
    checks = await checks_of(session, verification_id)
    return await _apply(session, runtime, verification, checks, answers, subject)


async def _apply(
    session: AsyncSession,
    runtime: Runtime,
    verification: Verification,
    checks: list[Check],
    answers: dict[str, Answer],
    subject: Subject,
    client: Client | None = None,
) -> bool:
    """Record ``answers`` on ``checks`` of the ``pending`` ``verification`` (held by this
    transaction) and move it on; True when that queued a job due now. ``client`` is the
    verification's, when the caller holds it."""
    by_type = {c.type: c for c in checks}
    for check_type, answer in answers.items():
        record_answer(by_type[check_type], answer.verifier, answer.result)
    await session.flush()
    decision = await settle(session, runtime, verification, checks)
    if decision.status in (Status.VERIFIED, Status.AWAITING_CODE):
        await lifecycle.follow(session, verification, decision, runtime.settings)
    if decision.status is not Status.AWAITING_CODE:
        return decision.retry_in is not None and decision.retry_in <= 0  # a later run is polled
    assert verification.phone_bidx is not None
    client = client or await session.get(Client, verification.client_id)
    assert client is not None
    refusal = await runtime.limits.hit_sms(
        client.mode, client.id, verification.phone_bidx, verification.identity_id
    )
    if refusal is not None:
        by_type[lifecycle.CODE_CHECK].reason = "rate_limited"
        await session.flush()
        return False
    await codes.issue(session, runtime, verification, subject.phone, mode=client.mode)
    return True
