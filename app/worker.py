"""The outbox worker: claims due jobs with a lease and does them.

Runs inside each API process by default (``REALNAME_RUN_WORKER``) and standalone as
``realname worker``. Any number of workers may run against one database: a job is claimed by
a guarded ``UPDATE`` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so each due job goes to one
worker at a time; a worker that dies leaves its lease to expire and the job is taken again.
Jobs are therefore at-least-once; their handlers are idempotent (checks are guarded on state,
the sandbox inbox is keyed by message id, providers get the message id as idempotency key,
webhook receivers de-duplicate on ``webhook-id``). Webhook deliveries run in slots of their own,
at most ``webhook_endpoint_concurrency`` to one endpoint per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, update
from sqlmodel import col, select

from app import faults
from app.crypto import as_suite
from app.db import session_scope
from app.models import Check, Client, OutboxJob, SmsCode, Status, Verification
from app.models._types import utcnow
from app.senders.base import DELIVERY_UNKNOWN, SendResult
from app.services import (
    audit,
    checks,
    codes,
    costs,
    deliveries,
    emergency,
    lifecycle,
    network_identity,
    operator_notices,
    outbox,
)
from app.services.events import WEBHOOK_JOB
from app.services.runtime import Runtime

logger = logging.getLogger(__name__)

SWEEP_SECONDS = 15.0
SMS_MAX_ATTEMPTS = 6


@dataclass(frozen=True)
class _Slots:
    """Checks and SMS share ``jobs``; webhook deliveries have slots of their own, so a slow
    receiver never holds up a verification."""

    jobs: asyncio.Semaphore
    webhooks: asyncio.Semaphore


class Worker:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._wake = asyncio.Event()
        self._swept_at = 0.0
        self._checkpoint_at: float | None = None
        self._backlog = False
        #: Webhook deliveries in flight per endpoint (the job's lane).
        self._lanes: Counter[str] = Counter()
        self._finished = 0

    def _slots(self) -> _Slots:
        settings = self.runtime.settings
        return _Slots(
            asyncio.Semaphore(settings.worker_concurrency),
            asyncio.Semaphore(settings.webhook_concurrency),
        )

    def _busy_lanes(self) -> list[str]:
        cap = self.runtime.settings.webhook_endpoint_concurrency
        return [lane for lane, n in self._lanes.items() if n >= cap]

    def notify(self) -> None:
        """Wake the loop now (called after a commit that queued a job)."""
        self._wake.set()

    async def claim(self, *, jobs: bool = True, webhooks: bool = False) -> OutboxJob | None:
        """Claim one due job: any job but a webhook delivery if ``jobs``, a webhook delivery to
        an endpoint with a free lane if ``webhooks``; with both, whichever is due first. One
        statement either way."""
        now = utcnow()
        kinds = []
        if jobs:
            kinds.append(col(OutboxJob.kind) != WEBHOOK_JOB)
        if webhooks:
            delivery = col(OutboxJob.kind) == WEBHOOK_JOB
            if busy := self._busy_lanes():
                delivery = delivery & col(OutboxJob.lane).not_in(busy)
            kinds.append(delivery)
        if not kinds:
            return None
        due = (
            (col(OutboxJob.done_at).is_(None))
            & (col(OutboxJob.run_after) <= now)
            & (col(OutboxJob.locked_until).is_(None) | (col(OutboxJob.locked_until) < now))
            & or_(*kinds)
        )
        candidate = (
            select(OutboxJob.id)
            .where(due)
            .order_by(col(OutboxJob.run_after))
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        async with session_scope(self.runtime.sessions) as session:
            claimed: OutboxJob | None = (
                (
                    await session.execute(
                        update(OutboxJob)
                        .where(col(OutboxJob.id) == candidate, due)
                        .values(
                            locked_until=now
                            + timedelta(seconds=self.runtime.settings.worker_lease_seconds),
                            attempts=col(OutboxJob.attempts) + 1,
                        )
                        .returning(OutboxJob)
                        .execution_options(synchronize_session=False)
                    )
                )
                .scalars()
                .first()
            )
            return claimed

    async def run_one(self) -> bool:
        """Claim and do one due job; False when none is due."""
        job = await self.claim(webhooks=True)
        if job is None:
            return False
        await self._handle(job)
        return True

    async def sweep(self) -> int:
        """Expire unfinished verifications that are past their time."""
        async with session_scope(self.runtime.sessions) as session:
            return await lifecycle.expire_due(session)

    async def _claim_into(self, slots: _Slots, running: set[asyncio.Task[None]]) -> int:
        """Start due jobs while there are free slots; return how many were started.

        Checks and codes and webhook deliveries have slots of their own, but one claim serves
        both while both have room, so an idle look costs one transaction, not one per kind."""
        if time.monotonic() - self._swept_at > SWEEP_SECONDS:
            self._swept_at = time.monotonic()
            await self.sweep()
        self._backlog = False
        started = 0
        while True:
            jobs, webhooks = not slots.jobs.locked(), not slots.webhooks.locked()
            if not (jobs or webhooks):
                self._backlog = True  # every slot taken: due jobs may be waiting for one
                return started
            job = await self.claim(jobs=jobs, webhooks=webhooks)
            if job is None:
                if not (jobs and webhooks):
                    self._backlog = True  # the full kind's jobs may be waiting for a slot
                return started
            lane_slots = slots.webhooks if job.kind == WEBHOOK_JOB else slots.jobs
            await lane_slots.acquire()  # free: checked above, and nothing else takes slots
            if job.lane is not None:
                self._lanes[job.lane] += 1
            task = asyncio.create_task(self._handle_in_slot(job, lane_slots))
            running.add(task)
            task.add_done_callback(running.discard)
            started += 1

    async def _handle_in_slot(self, job: OutboxJob, slots: asyncio.Semaphore) -> None:
        queued = True
        try:
            queued = await self._handle(job)
        finally:
            self._finished += 1
            slots.release()
            if job.lane is not None:
                # Deliveries to this endpoint may have waited for its lane.
                queued = queued or self._lanes[job.lane] >= (
                    self.runtime.settings.webhook_endpoint_concurrency
                )
                self._lanes[job.lane] -= 1
                if self._lanes[job.lane] <= 0:
                    del self._lanes[job.lane]
            # Look again only when there may be something to claim: jobs waited for this
            # slot, or this one queued another. (An empty claim is a whole transaction.)
            if queued or self._backlog:
                self._wake.set()

    async def run_once(self) -> int:
        """Do every job that is due now, up to ``worker_concurrency`` at a time (and
        ``webhook_concurrency`` deliveries); return how many were handled."""
        slots = self._slots()
        running: set[asyncio.Task[None]] = set()
        handled = 0
        while True:
            finished = self._finished
            started = await self._claim_into(slots, running)
            handled += started
            if finished != self._finished:
                continue  # a job ended while we were claiming: it may have queued another
            if not running and not started:
                return handled
            if running:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)

    async def run_until_idle(self, *, max_wait: float = 10.0) -> int:
        """Do due jobs, also waiting for ones scheduled within ``max_wait`` seconds (tests, CLI)."""
        handled = 0
        deadline = asyncio.get_running_loop().time() + max_wait
        while True:
            handled += await self.run_once()
            async with session_scope(self.runtime.sessions) as session:
                nxt = (
                    await session.execute(
                        select(OutboxJob.run_after)
                        .where(col(OutboxJob.done_at).is_(None))
                        .order_by(col(OutboxJob.run_after))
                        .limit(1)
                    )
                ).scalar_one_or_none()
            if nxt is None:
                return handled
            wait = (nxt - utcnow()).total_seconds()
            if asyncio.get_running_loop().time() + max(wait, 0) > deadline:
                return handled
            await asyncio.sleep(max(wait, 0.01))

    async def run_forever(self) -> None:
        """Claim due jobs into ``worker_concurrency`` slots, so one stalled provider call
        cannot hold up every other verification's checks and codes."""
        poll = self.runtime.settings.worker_poll_seconds
        slots = self._slots()
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wake.clear()
                try:
                    await self._claim_into(slots, running)
                    await self.checkpoint_if_due()
                except Exception as exc:  # keep the loop alive; a claimed job's lease expires
                    logger.error(
                        "worker iteration failed", extra={"error_type": type(exc).__name__}
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=poll)
        finally:
            for task in running:
                task.cancel()

    async def checkpoint_if_due(self) -> Path | None:
        """Every ``audit_checkpoint_seconds``, write a signed checkpoint of the audit chain to
        ``audit_checkpoint_dir`` (when set): ``checkpoint-<seq>.json``, written atomically."""
        settings = self.runtime.settings
        directory = settings.audit_checkpoint_dir
        now = time.monotonic()
        if directory is None or (
            self._checkpoint_at is not None
            and now - self._checkpoint_at < settings.audit_checkpoint_seconds
        ):
            return None
        self._checkpoint_at = now
        async with self.runtime.sessions() as session:
            doc = await audit.checkpoint(session, settings.audit_checkpoint_seeds)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"checkpoint-{doc['seq']:012d}.json"
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
        os.replace(partial, path)
        logger.info("audit checkpoint written", extra={"seq": doc["seq"]})
        return path

    async def _handle(self, job: OutboxJob) -> bool:
        """Do ``job``; True when it may have queued another job that is due now."""
        try:
            if job.kind == "run_checks":
                assert job.verification_id is not None
                # Done in the transaction that records the results: a job it queued (the
                # code's SMS) is never seen, or run, before this one is done.
                return await checks.process(self.runtime, job.verification_id, job_id=job.id)
            if job.kind == network_identity.JOB_KIND:
                assert job.verification_id is not None
                await network_identity.process(self.runtime, job.verification_id)
                await self._finish(job)
                return False
            if job.kind == operator_notices.JOB_KIND:
                if job.payload is not None and operator_notices.enabled(self.runtime.settings):
                    sent = await operator_notices.deliver(
                        self.runtime.settings, self.runtime.webhook_client, job.payload
                    )
                    if not sent:
                        await self._retry(job, "operator_notice_not_delivered")
                        return False
                await self._finish(job)
                return False
            if job.kind == WEBHOOK_JOB:
                await deliveries.deliver(self.runtime, job)
            elif job.kind == "send_sms":
                await self._send_sms(job)
            else:
                await self._finish(job, error="unknown_kind")
        except Exception as exc:
            logger.error(
                "job failed",
                extra={"job_id": job.id, "kind": job.kind, "error_type": type(exc).__name__},
            )
            await self._retry(job, "handler_error")
        return False

    async def _send_sms(self, job: OutboxJob) -> None:
        async with session_scope(self.runtime.sessions) as session:
            verification = await session.get(Verification, job.verification_id)
            client = await session.get(Client, verification.client_id) if verification else None
            code_row = (
                await session.execute(
                    select(SmsCode)
                    .where(col(SmsCode.verification_id) == job.verification_id)
                    .order_by(col(SmsCode.created_at).desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
        if job.payload is None or client is None or code_row is None or verification is None:
            await self._finish(job, error="nothing_to_send")
            return
        # The state may have moved on since the job was queued (revoked, erased, verified, a
        # newer code sent): then this message must not go out.
        if verification.status != Status.AWAITING_CODE:
            await self._finish(job, error="not_awaiting_code")
            return
        if utcnow() >= code_row.expires_at:
            await self._finish(job, error="code_expired_before_send")
            return
        payload = codes.open_payload(self.runtime, job)
        current = code_row.superseded is False and code_row.consumed_at is None
        if not current or code_row.code_hmac != codes.code_hmac(
            self.runtime.master_key,
            code_row.id,
            str(payload["code"]),
            as_suite(code_row.suite),
        ):
            await self._finish(job, error="code_superseded")
            return
        sender = self.runtime.senders.for_mode(client.mode)
        async with self.runtime.sessions() as session:
            held = sender.name in await emergency.quarantined(session)
        if held:  # Art. 25: the sender is not called while quarantined; the code may expire
            await self._retry(job, "sender_quarantined")
            return
        message = codes.message(job.id, payload)
        faults.reached("before_sms_send")
        try:
            result = await sender.send(message)
        except Exception as exc:
            logger.warning(
                "sender raised", extra={"sender": sender.name, "error_type": type(exc).__name__}
            )
            result = SendResult(delivered=False, retriable=True, reason="sender_error")
        codes.sent(sender.name, job.id, result)
        if not sender.sandbox and (result.delivered or result.reason == DELIVERY_UNKNOWN):
            costs.record_billable(self.runtime.settings, sender.name, client.id)
        faults.reached("after_sms_send")
        if result.delivered:
            await self._finish(job)
        elif result.reason == DELIVERY_UNKNOWN:
            await self._delivery_unknown(job)
        elif result.retriable and job.attempts < SMS_MAX_ATTEMPTS:
            await self._retry(job, result.reason or "send_failed")
        else:
            await self._finish(job, error=result.reason or "send_failed")

    async def _delivery_unknown(self, job: OutboxJob) -> None:
        """The message may or may not have arrived: never resent blindly. The job ends as
        ``delivery_unknown`` and the code check says so, so the integrator can offer its user a
        resend (which the per-phone and per-person limits still govern)."""
        async with session_scope(self.runtime.sessions) as session:
            await session.execute(
                update(OutboxJob)
                .where(col(OutboxJob.id) == job.id)
                .values(
                    done_at=utcnow(), payload=None, locked_until=None, last_error=DELIVERY_UNKNOWN
                )
            )
            await session.execute(
                update(Check)
                .where(
                    col(Check.verification_id) == job.verification_id,
                    col(Check.type) == "sms_otp",
                    col(Check.status) == "pending",
                )
                .values(reason=DELIVERY_UNKNOWN, updated_at=utcnow())
            )

    async def _finish(self, job: OutboxJob, *, error: str | None = None) -> None:
        async with session_scope(self.runtime.sessions) as session:
            await outbox.finish(session, job.id, error=error)

    async def _retry(self, job: OutboxJob, error: str) -> None:
        delay = min(2 ** max(job.attempts - 1, 0), 300)
        async with session_scope(self.runtime.sessions) as session:
            await session.execute(
                update(OutboxJob)
                .where(col(OutboxJob.id) == job.id)
                .values(
                    run_after=utcnow() + timedelta(seconds=delay),
                    locked_until=None,
                    last_error=error,
                )
            )
