"""The draft of an incident notification (Art. 25; PIPL Art. 57): what was affected in a time
window, which emergency actions were taken and when, the state of the audit chain, and the
headings of the facts only a person can supply. Counts and ids only: no personal data."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.models import AuditEvent, Client, ServiceToken, Verification
from app.models._types import utcnow
from app.services import audit

FORMAT = "realname.incident-report/v1"

#: Headings of what only the people handling the incident know (PIPL Art. 57's list).
FACTS = (
    ("discovered_at", "When and how the incident was discovered"),
    ("nature", "What happened: the cause and how far it reached"),
    ("personal_information", "Categories of personal information involved and possible harm"),
    ("remedies", "Remedial measures taken by the operator"),
    ("individual_measures", "What affected individuals can do to reduce the harm"),
    ("contact", "Who to contact at the operator"),
)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _counts(
    session: AsyncSession, column: Any, group: Any, since: datetime, until: datetime, what: Any
) -> dict[str, int]:
    rows = await session.execute(
        select(group, what).where(column >= since, column < until).group_by(group)
    )
    return {str(k): int(n) for k, n in rows}


async def build(
    session: AsyncSession, since: datetime, until: datetime, seeds: Mapping[int, bytes]
) -> dict[str, Any]:
    """The report for ``[since, until)`` as JSON-ready data (see :func:`to_markdown`)."""
    created = col(Verification.created_at)
    issued = col(ServiceToken.issued_at)
    verifications = await _counts(
        session, created, col(Verification.client_id), since, until, func.count()
    )
    people = await _counts(
        session,
        created,
        col(Verification.client_id),
        since,
        until,
        func.count(func.distinct(Verification.external_user_id)),
    )
    tokens = await _counts(session, issued, col(ServiceToken.client_id), since, until, func.count())
    revoked = await _counts(
        session,
        col(ServiceToken.revoked_at),
        col(ServiceToken.client_id),
        since,
        until,
        func.count(),
    )
    client_ids = sorted(set(verifications) | set(tokens) | set(revoked))
    names = {
        c.id: (c.name, c.mode)
        for c in (
            await session.execute(select(Client).where(col(Client.id).in_(client_ids)))
        ).scalars()
    }
    actions = [
        {
            "audit_seq": e.seq,
            "at": _ts(e.occurred_at),
            "action": e.action.removeprefix("emergency."),
            "actor_type": e.actor_type,
            "actor_id": e.actor_id,
            **{k: v for k, v in json.loads(e.data).items() if k != "withdrawn_keys"},
        }
        for e in (
            await session.execute(
                select(AuditEvent)
                .where(
                    col(AuditEvent.action).startswith("emergency."),
                    col(AuditEvent.occurred_at) >= since,
                    col(AuditEvent.occurred_at) < until,
                )
                .order_by(col(AuditEvent.seq))
            )
        ).scalars()
    ]
    chain = await audit.verify_chain(session)
    return {
        "format": FORMAT,
        "generated_at": _ts(utcnow()),
        "window": {"since": _ts(since), "until": _ts(until)},
        "affected": [
            {
                "client_id": cid,
                "client_name": names.get(cid, ("?", "?"))[0],
                "mode": names.get(cid, ("?", "?"))[1],
                "verifications": verifications.get(cid, 0),
                "people": people.get(cid, 0),
                "tokens_issued": tokens.get(cid, 0),
                "tokens_revoked": revoked.get(cid, 0),
            }
            for cid in client_ids
        ],
        "totals": {
            "verifications": sum(verifications.values()),
            "people": sum(people.values()),
            "tokens_issued": sum(tokens.values()),
            "tokens_revoked": sum(revoked.values()),
        },
        "emergency_actions": actions,
        "audit_chain": {
            "ok": chain.ok,
            "checked": chain.checked,
            "first_broken_seq": chain.first_broken_seq,
            "chain": chain.chain,
            "position": chain.position,
            "problem": chain.problem,
            "checkpoint": await audit.checkpoint(session, seeds) if chain.ok else None,
        },
        "facts_to_complete": {key: "" for key, _ in FACTS},
    }


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as a Markdown draft for the authorities and the affected clients."""
    window = report["window"]
    lines = [
        "# Incident report (draft)",
        "",
        f"Window: {window['since']} to {window['until']} (UTC).",
        f"Generated {report['generated_at']}.",
        "Counts only; this draft holds no personal data.",
        "",
        "## Affected, per client",
        "",
        "| client | name | mode | verifications | people | tokens issued | tokens revoked |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{a['client_id']}` | {a['client_name']} | {a['mode']} | {a['verifications']} "
        f"| {a['people']} | {a['tokens_issued']} | {a['tokens_revoked']} |"
        for a in report["affected"]
    ]
    t = report["totals"]
    lines += [
        f"| **total** | | | {t['verifications']} | {t['people']} | {t['tokens_issued']} "
        f"| {t['tokens_revoked']} |",
        "",
        "## Emergency actions taken",
        "",
    ]
    if report["emergency_actions"]:
        lines += ["| audit seq | at | action | scope | reason code |", "|---|---|---|---|---|"]
        lines += [
            f"| {a['audit_seq']} | {a['at']} | {a['action']} | {a.get('scope', '')} "
            f"| {a.get('reason_code', '')} |"
            for a in report["emergency_actions"]
        ]
    else:
        lines.append("None in this window.")
    chain = report["audit_chain"]
    lines += ["", "## Audit trail", ""]
    if chain["ok"]:
        cp = chain["checkpoint"]
        lines.append(
            f"The audit chains verify: {chain['checked']} events in {len(cp['chains'])} "
            f"chain(s); their heads are in the signed checkpoint (key {cp['key_version']}) "
            "in the JSON report."
        )
    else:
        lines.append(
            f"**The chain does not verify**: {chain['problem']} "
            f"(chain {chain['chain']}, position {chain['position']}, "
            f"event {chain['first_broken_seq']})."
        )
    lines += ["", "## Facts to complete", ""]
    for _, heading in FACTS:
        lines += [f"### {heading}", "", "_To be completed._", ""]
    return "\n".join(lines)
