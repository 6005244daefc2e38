"""What providers bill: counted as it happens (metrics) and read back per client and day.

Prices come from ``REALNAME_PROVIDER_PRICES`` (yuan per billable call, by verifier or sender
name; each name is one provider action, e.g. ``tencent_faceid_id2`` = FaceID
``IdCardVerification``). A check is billable when its verifier says the provider bills that
answer (a match or a mismatch, not an error); an SMS when the provider accepted it, or may have
(``delivery_unknown``). Sandbox verifiers and senders bill nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, or_, select

from app import metrics
from app.models import Check, Client, OutboxJob, Verification
from app.models._types import utcnow
from app.senders.base import DELIVERY_UNKNOWN
from app.settings import Settings


def price_of(settings: Settings, provider: str) -> float:
    """The configured price of one billable call of ``provider`` (0 when unpriced)."""
    return float(settings.provider_prices.get(provider, 0.0))


def record_billable(settings: Settings, provider: str, client_id: str) -> None:
    """Count one billable call and its estimated cost (metric labels: provider, client id)."""
    metrics.BILLABLE_CALLS.labels(provider, client_id).inc()
    metrics.ESTIMATED_COST.labels(provider, client_id).inc(price_of(settings, provider))


@dataclass(frozen=True, slots=True)
class DailyCost:
    day: str
    client_id: str
    provider: str
    billable_calls: int
    estimated_cost: float


def _day(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)[:10]


async def daily(
    session: AsyncSession, settings: Settings, live_sender: str, *, days: int = 30
) -> list[DailyCost]:
    """Billable calls and estimated cost per (UTC day, client, provider), newest day first.

    Live clients only (test keys reach no provider). Checks are attributed to the verifier that
    answered them; SMS to ``live_sender``.
    """
    since = utcnow() - timedelta(days=days)
    day_of_check = func.date(col(Check.updated_at))
    checks = (
        await session.execute(
            select(day_of_check, Verification.client_id, Check.verifier, func.count())
            .join(Verification, col(Verification.id) == col(Check.verification_id))
            .join(Client, col(Client.id) == col(Verification.client_id))
            .where(
                col(Client.mode) == "live",
                col(Check.billable).is_(True),
                col(Check.verifier).is_not(None),
                col(Check.updated_at) >= since,
            )
            .group_by(day_of_check, col(Verification.client_id), col(Check.verifier))
        )
    ).all()
    day_of_send = func.date(col(OutboxJob.done_at))
    sends = (
        await session.execute(
            select(day_of_send, Verification.client_id, func.count())
            .join(Verification, col(Verification.id) == col(OutboxJob.verification_id))
            .join(Client, col(Client.id) == col(Verification.client_id))
            .where(
                col(OutboxJob.kind) == "send_sms",
                col(OutboxJob.done_at) >= since,
                col(Client.mode) == "live",
                or_(
                    col(OutboxJob.last_error).is_(None),
                    col(OutboxJob.last_error) == DELIVERY_UNKNOWN,
                ),
            )
            .group_by(day_of_send, col(Verification.client_id))
        )
    ).all()
    rows = [(_day(d), c, str(v), int(n)) for d, c, v, n in checks]
    rows += [(_day(d), c, live_sender, int(n)) for d, c, n in sends]
    out = [
        DailyCost(day, client, provider, n, round(n * price_of(settings, provider), 4))
        for day, client, provider, n in rows
    ]
    return sorted(out, key=lambda r: (r.day, r.client_id, r.provider), reverse=True)
