"""The sandbox SMS inbox: what the sandbox sender 'delivered' (test-mode clients only)."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.models import SandboxMessage
from app.models._types import utcnow


async def messages(session: AsyncSession, verification_id: str) -> list[SandboxMessage]:
    """The verification's messages, newest first; expired ones are removed on the way."""
    await session.execute(delete(SandboxMessage).where(col(SandboxMessage.expires_at) <= utcnow()))
    query = (
        select(SandboxMessage)
        .where(SandboxMessage.verification_id == verification_id)
        .order_by(col(SandboxMessage.created_at).desc())
    )
    return list((await session.execute(query)).scalars())
