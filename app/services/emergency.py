"""Art. 25 emergency actions: suspend issuance, revoke every token, quarantine a provider.

:func:`act` is the one entry point (admin API, admin UI and CLI all call it). Each action's
record, its effect and its announcement (:func:`_announce`: the audit event and the clients'
events) are written in the caller's single transaction, so a crash can lose neither without
the other.

Revoking every token does three things at once: every live token row is marked revoked, the
cutoff time is recorded (a token being issued in a transaction that commits later is still
caught: introspection compares its issue time with the newest cutoff), and, for all clients,
every signing key is **withdrawn** from the JWKS (a new key signs from then on), so offline
verifiers reject the old tokens as soon as they refresh the key set. A revocation for one
client cannot withdraw the key every client shares (that would cut off every other client's
users too): it takes effect at introspection, and offline verifiers stop accepting the tokens
when they expire (``REALNAME_TOKEN_TTL_SECONDS``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app import faults
from app.errors import ProblemError
from app.hotcache import MEASURE_STATES, MeasureStates, measures_changed, tokens_changed
from app.models import Client, EmergencyMeasure, ServiceToken, SigningKey, Verification
from app.models._types import utcnow
from app.services import audit, events, operator_notices
from app.services.runtime import Runtime
from app.settings import Settings

ALL = "*"
SUSPENDED = "issuance_suspended"
REVOKED = "tokens_revoked"
QUARANTINED = "provider_quarantined"

ACTIONS = (
    "suspend-issuance",
    "resume-issuance",
    "revoke-tokens",
    "quarantine-provider",
    "release-provider",
)

#: The documented reason codes of emergency actions (README, "Incidents").
REASON_CODES: dict[str, str] = {
    "security_incident": "a security incident is being handled",
    "data_breach_suspected": "personal data may have leaked",
    "key_compromise": "a signing or API key may be known to others",
    "credential_stuffing": "automated abuse of registration or tokens",
    "provider_compromised": "a verifier or SMS provider is compromised or returns wrong answers",
    "provider_outage": "a verifier or SMS provider is failing",
    "regulator_order": "a competent authority ordered it",
    "maintenance": "planned work",
    "drill": "an emergency-plan exercise",
    "incident_resolved": "the cause is removed (to resume or release)",
}


@dataclass(frozen=True)
class Outcome:
    action: str
    changed: bool
    measure: EmergencyMeasure | None
    audit_seq: int | None
    revoked_tokens: int = 0

    def as_json(self) -> dict[str, Any]:
        m = self.measure
        return {
            "action": self.action,
            "changed": self.changed,
            "audit_seq": self.audit_seq,
            "revoked_tokens": self.revoked_tokens,
            "measure": None if m is None else measure_json(m),
        }


def describe(m: EmergencyMeasure) -> str:
    """One line for the admin banner."""
    since = m.started_at.strftime("%Y-%m-%d %H:%M UTC")
    if m.kind == QUARANTINED:
        what = f"Provider {m.scope} quarantined"
    else:
        who = "every client" if m.scope == ALL else f"client {m.scope}"
        what = f"Issuance suspended for {who}"
    return f"{what} since {since} ({m.reason_code})"


def measure_json(m: EmergencyMeasure) -> dict[str, Any]:
    return {
        "id": m.id,
        "kind": m.kind,
        "scope": m.scope,
        "reason_code": m.reason_code,
        "started_at": m.started_at,
        "started_by": m.started_by,
        "started_seq": m.started_seq,
        "ended_at": m.ended_at,
        "ended_by": m.ended_by,
        "ended_seq": m.ended_seq,
    }


async def _announce(
    session: AsyncSession,
    *,
    settings: Settings | None,
    action: str,
    measure: EmergencyMeasure,
    actor_type: str,
    actor_id: str | None,
    data: dict[str, Any],
) -> int:
    """Record and announce an emergency action, in the caller's transaction; the audit seq.

    A suspension and its end are events (``issuance.suspended``, ``issuance.resumed``) for
    every client in its scope; each token a revocation ends is its own ``token.revoked``.
    """
    if measure.kind == SUSPENDED:
        kind = (
            events.ISSUANCE_SUSPENDED if action == "suspend-issuance" else events.ISSUANCE_RESUMED
        )
        scope = (
            [measure.scope]
            if measure.scope != ALL
            else list((await session.execute(select(Client.id))).scalars())
        )
        for client_id in scope:
            await events.emit(session, client_id=client_id, type=kind, reason=data["reason_code"])
    event = await audit.record(
        session,
        action=f"emergency.{action}",
        subject_type="emergency_measure",
        subject_id=measure.id,
        actor_type=actor_type,
        actor_id=actor_id,
        data={"kind": measure.kind, "scope": measure.scope, **data},
    )
    if settings is not None:
        operator_notices.queue(
            session,
            settings,
            f"emergency.{action}",
            {
                "kind": measure.kind,
                "scope": measure.scope,
                "actor_type": actor_type,
                "actor_id": actor_id,
                "audit_seq": event.seq,
                **data,
            },
        )
    assert event.seq is not None  # flushed
    return event.seq


async def _in_force(session: AsyncSession, kind: str, scope: str) -> EmergencyMeasure | None:
    return (
        await session.execute(
            select(EmergencyMeasure).where(
                EmergencyMeasure.kind == kind,
                EmergencyMeasure.scope == scope,
                col(EmergencyMeasure.ended_at).is_(None),
            )
        )
    ).scalar_one_or_none()


async def in_force(session: AsyncSession) -> list[EmergencyMeasure]:
    """Every suspension and quarantine now in force, oldest first."""
    return list(
        (
            await session.execute(
                select(EmergencyMeasure)
                .where(col(EmergencyMeasure.ended_at).is_(None))
                .order_by(col(EmergencyMeasure.started_at))
            )
        ).scalars()
    )


async def _active(session: AsyncSession) -> frozenset[tuple[str, str]]:
    """The measures in force as (kind, scope) pairs: from this process's copy while its
    invalidation subscription is healthy (every action drops it everywhere before it is
    answered), else from the database."""
    cache = session.info.get(MEASURE_STATES)
    epoch = cache.epoch() if isinstance(cache, MeasureStates) else None
    if epoch is not None:
        assert isinstance(cache, MeasureStates)
        held = cache.get("active", epoch)
        if held is not None:
            return held
    rows = await session.execute(
        select(EmergencyMeasure.kind, EmergencyMeasure.scope).where(
            col(EmergencyMeasure.ended_at).is_(None)
        )
    )
    active = frozenset((str(kind), str(scope)) for kind, scope in rows)
    if isinstance(cache, MeasureStates):
        cache.put("active", epoch, active)
    return active


async def ensure_issuing(session: AsyncSession, client_id: str, retry_after: int) -> None:
    """Refuse (503 issuance_suspended) while issuance is suspended for all or for this client."""
    active = await _active(session)
    if (SUSPENDED, ALL) in active or (SUSPENDED, client_id) in active:
        raise ProblemError(
            "issuance_suspended",
            "New verifications and tokens are suspended by the operator; retry later",
            headers={"Retry-After": str(retry_after)},
        )


async def quarantined(session: AsyncSession) -> set[str]:
    """Names of the verifiers and senders now in quarantine."""
    return {scope for kind, scope in await _active(session) if kind == QUARANTINED}


def cutoff_subquery(client_id: Any) -> Any:
    """The newest revoke-all cutoff that applies to ``client_id`` (a column or a value)."""
    return (
        select(func.max(EmergencyMeasure.started_at))
        .where(
            EmergencyMeasure.kind == REVOKED,
            or_(col(EmergencyMeasure.scope) == ALL, col(EmergencyMeasure.scope) == client_id),
        )
        .scalar_subquery()
    )


def known_providers(runtime: Runtime) -> set[str]:
    """The verifiers and senders this service runs (what may be quarantined)."""
    verifiers = [
        *runtime.verifiers.sandbox.values(),
        *(v for chain in runtime.verifiers.live.values() for v in chain),
    ]
    network = [runtime.verifiers.network_sandbox, runtime.verifiers.network_live]
    return (
        {v.name for v in verifiers}
        | {n.name for n in network if n is not None}
        | {
            runtime.senders.sandbox.name,
            runtime.senders.live.name,
        }
    )


def _check_reason(reason_code: str | None) -> str:
    if not reason_code:
        raise ProblemError("reason_required", "reason_code is required")
    if reason_code not in REASON_CODES:
        raise ProblemError(
            "invalid_reason_code", f"reason_code must be one of: {', '.join(REASON_CODES)}"
        )
    return reason_code


async def act(
    session: AsyncSession,
    *,
    action: str,
    reason_code: str | None,
    client_id: str | None = None,
    provider: str | None = None,
    known_providers: Collection[str] = (),
    actor_type: str,
    actor_id: str | None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> Outcome:
    """Carry out one emergency action; 4xx and nothing changed on bad input. With
    ``settings``, the operator's webhook (if set up) is told in the same transaction."""
    if action not in ACTIONS:
        raise ProblemError("not_found", "No such emergency action")
    reason = _check_reason(reason_code)
    provider_action = action in ("quarantine-provider", "release-provider")
    if provider_action:
        if client_id is not None:
            raise ProblemError("invalid_request", "A quarantine applies to every client")
        if not provider:
            raise ProblemError("invalid_request", "provider is required")
        if provider not in known_providers:
            raise ProblemError("unknown_provider", "No verifier or sender has that name")
        scope = provider
    elif provider is not None:
        raise ProblemError("invalid_request", "provider applies to quarantines only")
    elif client_id is not None:
        if await session.get(Client, client_id) is None:
            raise ProblemError("unknown_client", "No client has that id")
        scope = client_id
    else:
        scope = ALL
    # Serialise emergency actions with each other (they are rare): two racing
    # suspensions then find each other instead of both starting one.
    await audit.lock_trail(session)
    now = now or utcnow()
    kind = {"suspend": SUSPENDED, "resume": SUSPENDED, "revoke": REVOKED}.get(
        action.split("-")[0], QUARANTINED
    )
    if action in ("suspend-issuance", "quarantine-provider"):
        existing = await _in_force(session, kind, scope)
        if existing is not None:
            return Outcome(action, False, existing, existing.started_seq)
        measure = EmergencyMeasure(
            kind=kind, scope=scope, reason_code=reason, started_at=now, started_by=actor_id
        )
        session.add(measure)
        measures_changed(session)
        await session.flush()
        measure.started_seq = await _announce(
            session,
            settings=settings,
            action=action,
            measure=measure,
            actor_type=actor_type,
            actor_id=actor_id,
            data={"reason_code": reason},
        )
        return Outcome(action, True, measure, measure.started_seq)
    if action in ("resume-issuance", "release-provider"):
        existing = await _in_force(session, kind, scope)
        if existing is None:
            code = "not_suspended" if kind == SUSPENDED else "not_quarantined"
            raise ProblemError(code)
        existing.ended_at, existing.ended_by, existing.end_reason_code = now, actor_id, reason
        measures_changed(session)
        existing.ended_seq = await _announce(
            session,
            settings=settings,
            action=action,
            measure=existing,
            actor_type=actor_type,
            actor_id=actor_id,
            data={"reason_code": reason, "started_seq": existing.started_seq},
        )
        return Outcome(action, True, existing, existing.ended_seq)
    return await _revoke_tokens(session, settings, scope, reason, actor_type, actor_id, now)


async def act_as_admin(
    session: AsyncSession,
    runtime: Runtime,
    admin_id: str,
    *,
    action: str,
    reason_code: str | None,
    client_id: str | None = None,
    provider: str | None = None,
) -> Outcome:
    """An admin's emergency action (from the API or a page): :func:`act` with this service's
    providers; revoking every token also drops this process's cached signing key at once."""
    outcome = await act(
        session,
        action=action,
        reason_code=reason_code,
        client_id=client_id,
        provider=provider,
        known_providers=known_providers(runtime),
        settings=runtime.settings,
        actor_type="admin",
        actor_id=admin_id,
    )
    if action == "revoke-tokens":
        runtime.keyring.forget_active()
    return outcome


async def _revoke_tokens(
    session: AsyncSession,
    settings: Settings | None,
    scope: str,
    reason: str,
    actor_type: str,
    actor_id: str | None,
    now: datetime,
) -> Outcome:
    live = [col(ServiceToken.revoked_at).is_(None), col(ServiceToken.expires_at) > now]
    if scope != ALL:
        live.append(col(ServiceToken.client_id) == scope)
    rows = (
        await session.execute(
            update(ServiceToken)
            .where(*live)
            .values(revoked_at=now, revoked_reason="emergency")
            .returning(
                col(ServiceToken.jti),
                col(ServiceToken.client_id),
                col(ServiceToken.verification_id),
            )
            .execution_options(synchronize_session=False)
        )
    ).all()
    revoked = len(rows)
    # Each revoked token is announced to its client like any other revocation, in this
    # same transaction (a crash loses neither the revocation nor its events).
    verifications = {
        v.id: v
        for v in (
            await session.execute(
                select(Verification).where(col(Verification.id).in_({r[2] for r in rows}))
            )
        ).scalars()
    }
    for jti, client_id, verification_id in rows:
        await events.emit(
            session,
            client_id=client_id,
            type=events.TOKEN_REVOKED,
            verification=verifications.get(verification_id),
            reason="emergency",
            jti=jti,
        )
    withdrawn: list[str] = []
    if scope == ALL:
        withdrawn = [
            str(kid)
            for kid in (
                await session.execute(
                    select(SigningKey.kid).where(col(SigningKey.withdrawn_at).is_(None))
                )
            ).scalars()
        ]
        await session.execute(
            update(SigningKey)
            .where(col(SigningKey.withdrawn_at).is_(None))
            .values(withdrawn_at=now, retired_at=func.coalesce(SigningKey.retired_at, now))
        )
    measure = EmergencyMeasure(
        kind=REVOKED,
        scope=scope,
        reason_code=reason,
        started_at=now,
        started_by=actor_id,
        ended_at=now,
        ended_by=actor_id,
    )
    session.add(measure)
    await session.flush()
    tokens_changed(session)
    faults.reached("emergency_before_announce")
    measure.started_seq = measure.ended_seq = await _announce(
        session,
        settings=settings,
        action="revoke-tokens",
        measure=measure,
        actor_type=actor_type,
        actor_id=actor_id,
        data={"reason_code": reason, "revoked_tokens": revoked, "withdrawn_keys": withdrawn},
    )
    return Outcome("revoke-tokens", True, measure, measure.started_seq, revoked)
