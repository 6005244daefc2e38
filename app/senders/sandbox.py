"""The sandbox sender: test-mode clients' messages land in an inbox integrators can read."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import select

from app.db import session_scope
from app.identity import mask_phone
from app.models import OutboxJob, SandboxMessage
from app.models._types import utcnow
from app.senders.base import OutgoingSms, SendResult


class SandboxSender:
    """Stores the message in ``sandbox_messages`` (expiring within an hour); sends nothing.

    Idempotent on ``message_id``: a retried job does not make a second message.
    """

    name: ClassVar[str] = "sandbox"
    sandbox: ClassVar[bool] = True

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_seconds: int = 3600) -> None:
        self._sessions = sessions
        self._ttl = timedelta(seconds=min(ttl_seconds, 3600))

    #: Delivers inside the caller's transaction (``deliver_in``): a registration's first code
    #: reaches the inbox with its commit, without a job for the worker.
    inline: ClassVar[bool] = True

    async def send(self, message: OutgoingSms) -> SendResult:
        async with session_scope(self._sessions) as session:
            exists = (
                await session.execute(
                    select(SandboxMessage.id).where(SandboxMessage.message_id == message.message_id)
                )
            ).first()
            if exists is not None:
                return SendResult(delivered=True, provider_reference=message.message_id)
            job = await session.get(OutboxJob, message.message_id)
            if job is None or job.verification_id is None:
                return SendResult(delivered=False, retriable=False, reason="unknown_message")
            return self.deliver_in(session, message, job.verification_id)

    def deliver_in(
        self, session: AsyncSession, message: OutgoingSms, verification_id: str
    ) -> SendResult:
        """Put ``message`` (for ``verification_id``) in the inbox as part of ``session``'s
        transaction: it is there exactly when that transaction commits."""
        now = utcnow()
        session.add(
            SandboxMessage(
                message_id=message.message_id,
                verification_id=verification_id,
                to_masked=mask_phone(message.phone),
                body=message.body,
                created_at=now,
                expires_at=now + self._ttl,
            )
        )
        return SendResult(delivered=True, provider_reference=message.message_id)
