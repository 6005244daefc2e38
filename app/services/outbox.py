"""The outbox: a job is written in the transaction that needs it, and the in-process worker is
woken once that transaction has committed (not before, so it never looks too early; not by
every request, so a transaction that queued nothing costs the worker nothing)."""

from __future__ import annotations

from typing import Final

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.hotcache import after_commit
from app.models import OutboxJob
from app.models._types import utcnow

#: Session-info key of a callable that wakes the in-process worker (set by the runtime).
WAKE_WORKER: Final = "wake_worker"


def queue(session: AsyncSession, job: OutboxJob, *, wake: bool = True) -> OutboxJob:
    """Add ``job`` to the session; with ``wake`` (a job due now), wake the worker after the
    commit."""
    session.add(job)
    waker = session.info.get(WAKE_WORKER) if wake else None
    if waker is not None:
        after_commit(session, WAKE_WORKER, waker)
    return job


async def finish(session: AsyncSession, job_id: str, *, error: str | None = None) -> None:
    """Mark the job done (its payload dropped, its lease released) in the caller's
    transaction."""
    await session.execute(
        update(OutboxJob)
        .where(col(OutboxJob.id) == job_id)
        .values(done_at=utcnow(), payload=None, locked_until=None, last_error=error)
    )
