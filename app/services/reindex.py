"""Moving stored personal-data values to the configured crypto suite (``realname reindex``).

After an operator changes ``REALNAME_CRYPTO_SUITE`` (or adds a blind-index key version), values
made under the old suite stay readable and findable: sealed values carry their suite in their
format, blind indexes are stored beside their suite and key version, and every lookup tries
every (suite, version). This module moves what can be moved while the service runs:

* sealed values (the coming-of-age date, the transient sealed subject, queued SMS payloads) are
  opened and sealed again under the current suite, in small batches, each batch one transaction
  and each row guarded on its old value (a row changed meanwhile is left for the next run);
* blind indexes are one-way (that is their point): they cannot be recomputed without the ID
  number, which the service does not keep. An identity is re-indexed the next time its person
  presents the number (``services.verifications``); until then lookups find it under its old
  suite and version. The report counts those rows, so an operator can see the switch converge.

Nothing here logs or returns a personal value: only counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select

from app.crypto import GM_SEAL_PREFIX, reseal
from app.db import session_scope
from app.identity.subject import SUBJECT_SEAL
from app.models import Identity, OutboxJob, Verification
from app.services.codes import SMS_SEAL
from app.services.runtime import Runtime
from app.services.tokens import ADULT_ON_SEAL

BATCH = 200


@dataclass
class ReindexReport:
    """What one run did and what is left; counts only."""

    suite: str
    key_version: int
    resealed: dict[str, int] = field(default_factory=dict)
    #: Identities by ``"<suite>:<version>"`` of their blind index.
    identities_by_index: dict[str, int] = field(default_factory=dict)
    #: Identities not yet under the current suite and version: they move when their person
    #: next presents the ID number.
    awaiting_presentation: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "key_version": self.key_version,
            "resealed": self.resealed,
            "identities_by_index": self.identities_by_index,
            "awaiting_presentation": self.awaiting_presentation,
        }


def _other_suite_filter(column: Any, suite: str) -> Any:
    """Rows whose sealed value was made by a suite other than ``suite``."""
    prefixed = col(column).like(GM_SEAL_PREFIX + "%")
    return ~prefixed if suite == "gm" else prefixed


async def _reseal_column(
    runtime: Runtime,
    model: Any,
    column: Any,
    purpose: str,
    *extra: Any,
) -> int:
    """Reseal every value of ``column`` (a model attribute) made by the other suite; returns
    how many moved."""
    suite = runtime.suite
    moved = 0
    while True:
        async with session_scope(runtime.sessions) as session:
            rows = (
                await session.execute(
                    select(model.id, column)
                    .where(col(column).is_not(None), _other_suite_filter(column, suite), *extra)
                    .limit(BATCH)
                )
            ).all()
            for row_id, old in rows:
                new = reseal(runtime.master_key, purpose, old, row_id.encode(), suite)
                if new is None:
                    continue
                result = await session.execute(
                    update(model)
                    .where(col(model.id) == row_id, col(column) == old)
                    .values({column.key: new})
                )
                moved += result.rowcount  # type: ignore[attr-defined]
        if len(rows) < BATCH:
            return moved


async def run(runtime: Runtime) -> ReindexReport:
    """Reseal what can be resealed under the current suite and report the blind indexes left."""
    blind = runtime.blind
    report = ReindexReport(suite=blind.suite, key_version=blind.current_version)
    report.resealed = {
        "identities.adult_on": await _reseal_column(
            runtime, Identity, Identity.adult_on_sealed, ADULT_ON_SEAL
        ),
        "verifications.subject": await _reseal_column(
            runtime, Verification, Verification.sealed_subject, SUBJECT_SEAL
        ),
        "outbox_jobs.payload": await _reseal_column(
            runtime,
            OutboxJob,
            OutboxJob.payload,
            SMS_SEAL,
            col(OutboxJob.kind) == "send_sms",
            col(OutboxJob.done_at).is_(None),
        ),
    }
    async with session_scope(runtime.sessions) as session:
        rows = (
            await session.execute(
                select(Identity.bidx_suite, Identity.bidx_version, func.count()).group_by(
                    col(Identity.bidx_suite), col(Identity.bidx_version)
                )
            )
        ).all()
    for suite, version, count in rows:
        report.identities_by_index[f"{suite}:{version}"] = int(count)
        if (suite, version) != (blind.suite, blind.current_version):
            report.awaiting_presentation += int(count)
    return report
