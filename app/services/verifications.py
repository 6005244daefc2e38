"""Verification intake and reads.

Personal data enters here already canonicalised (``canonicalise``) and leaves as blind indexes,
an argon2id hash, masked values and a transient sealed copy for the checks. Nothing here commits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import and_, col, or_, select

from app.crypto import reseal
from app.db import insert_ignoring
from app.errors import ProblemError
from app.identity import (
    BlindIndex,
    IdNumber,
    InvalidField,
    Subject,
    check_external_user_id,
    hash_identity_input,
    mask_id_number,
    mask_name,
    mask_phone,
    parse_id_number,
    parse_name,
    parse_phone,
)
from app.models import (
    LIVE_STATUSES,
    Check,
    Client,
    ClientIdentity,
    Identity,
    OutboxJob,
    SmsCode,
    Status,
    Verification,
)
from app.models._types import new_id, utcnow
from app.ratelimit import raise_refusal
from app.schemas.verification import (
    CheckOut,
    Erasure,
    Masked,
    NextAction,
    VerificationCreate,
    VerificationOut,
)
from app.services import audit, consent, erasure, lifecycle, outbox, policies, tokens
from app.services.policies import PolicyRef
from app.services.runtime import Runtime
from app.services.tokens import ADULT_ON_SEAL, seal_adult_on

LEVELS = ("L1", "L2", "L3")
#: Checks each level requires, in the order they run.
LEVEL_CHECKS: dict[str, tuple[str, ...]] = {
    "L1": ("id_registry",),
    "L2": ("id_registry", "sms_otp"),
    "L3": ("id_registry", "sms_otp", "carrier_3e"),
}


@dataclass(frozen=True, slots=True)
class Prepared:
    """Everything derived from the identity that may be stored. Contains no plaintext."""

    name_bidx: str
    phone_bidx: str
    bidx_version: int
    bidx_suite: str
    identity_hash: str
    masked_name: str
    masked_id_number: str
    masked_phone: str


def canonicalise(body: VerificationCreate) -> Subject:
    """Canonicalise and validate every identity field, reporting all bad fields at once."""
    errors: list[InvalidField] = []
    results: dict[str, object] = {}
    for field, parse, raw in (
        ("external_user_id", check_external_user_id, body.external_user_id),
        ("real_name", parse_name, body.real_name),
        ("id_number", parse_id_number, body.id_number),
        ("phone", parse_phone, body.phone),
    ):
        try:
            results[field] = parse(raw)
        except InvalidField as exc:
            errors.append(exc)
    if errors:
        raise ProblemError(
            errors[0].code,
            "; ".join(f"/{e.field}: {e.detail}" for e in errors),
            extra={
                "errors": [
                    {"pointer": f"/{e.field}", "code": e.code, "detail": e.detail} for e in errors
                ]
            },
        )
    id_number = results["id_number"]
    assert isinstance(id_number, IdNumber)
    return Subject(
        real_name=str(results["real_name"]), id_number=id_number.value, phone=str(results["phone"])
    )


def fingerprint_body(body: VerificationCreate, subject: Subject) -> dict[str, object]:
    """What makes two requests 'the same' for Idempotency-Key purposes: canonical values."""
    return {
        "external_user_id": body.external_user_id,
        "identity": subject.fingerprint(),
        "policy_version": body.consent.policy_version,
        "id_type": body.id_type,
        "level": body.level,
    }


async def prepare(runtime: Runtime, subject: Subject) -> Prepared:
    """Derive the storable forms. The argon2id hash runs off the event loop, bounded."""
    blind = runtime.blind
    identity_hash = await runtime.identity_hasher.hash(
        hash_identity_input(subject.real_name, subject.id_number, subject.phone)
    )
    return Prepared(
        name_bidx=blind.compute("real_name", subject.real_name),
        phone_bidx=blind.compute("phone", subject.phone),
        bidx_version=blind.current_version,
        bidx_suite=blind.suite,
        identity_hash=identity_hash,
        masked_name=mask_name(subject.real_name),
        masked_id_number=mask_id_number(subject.id_number),
        masked_phone=mask_phone(subject.phone),
    )


async def precheck_sms(runtime: Runtime, client: Client, level: str, prepared: Prepared) -> None:
    """Refuse up front (429) when the level needs an SMS this phone may not receive yet from
    this client (only this client's own sends, and the platform's daily cap, count)."""
    if "sms_otp" in LEVEL_CHECKS[level]:
        raise_refusal(
            await runtime.limits.check_sms(client.mode, client.id, prepared.phone_bidx),
            "Too many codes sent to this phone",
            limit="sms_phone",
        )


async def consented_policy(session: AsyncSession, runtime: Runtime, version: str) -> PolicyRef:
    """The published collection-rules version the person consented to; 422
    ``consent_required`` when ``version`` is not one."""
    policy = await policies.published(session, version, runtime.policies)
    if policy is None:
        raise ProblemError(
            "consent_required",
            "consent.policy_version must name a published collection-rules version",
        )
    return policy


def resolve_level(client: Client, requested: str | None) -> str:
    level = requested or client.default_level
    if LEVELS.index(level) < LEVELS.index(client.default_level):
        raise ProblemError(
            "level_too_low",
            f"This client requires at least {client.default_level}; {level} was asked for",
        )
    return level


_IDENTITY_COLUMNS = (
    "id",
    "id_type",
    "id_number_bidx",
    "bidx_version",
    "bidx_suite",
    "adult_on_sealed",
    "created_at",
)


@functools.cache
def _identity_statements(dialect: str, candidates: int) -> tuple[Any, Any]:
    """:func:`identity_for`'s two statements for ``candidates`` blind indexes, built once: the
    insert of a person none of whose indexes exists, and the lookup by any of them. Bound
    parameters: ``suite_<i>``, ``version_<i>``, ``digest_<i>`` and ``new_<column>``."""
    known = or_(
        *(
            and_(
                Identity.bidx_suite == bindparam(f"suite_{i}"),
                Identity.bidx_version == bindparam(f"version_{i}"),
                Identity.id_number_bidx == bindparam(f"digest_{i}"),
            )
            for i in range(candidates)
        )
    )
    table = Identity.__table__  # type: ignore[attr-defined]
    columns = table.c
    fresh = select(
        *(bindparam(f"new_{name}", type_=columns[name].type) for name in _IDENTITY_COLUMNS)
    ).where(~select(Identity.id).where(known).exists())
    insert_new = (
        # The table, not the entity: an ORM insert given parameters would be a bulk insert.
        insert_ignoring(dialect, table, ["bidx_version", "id_number_bidx"])
        .from_select(list(_IDENTITY_COLUMNS), fresh)
        .returning(table.c.id)
    )
    lookup = select(
        Identity.id, Identity.bidx_suite, Identity.bidx_version, Identity.id_number_bidx
    ).where(known)
    return insert_new, lookup


async def identity_for(
    session: AsyncSession,
    runtime: Runtime,
    *,
    field: str,
    value: str,
    adult_on: date,
    replace_adult_on: bool = False,
    id_type: str = "cn_resident_id",
) -> str:
    """The person's identity id, found by the blind index of ``field`` under any suite and key
    version, or created (race-safe: ``INSERT … ON CONFLICT DO NOTHING``, then read the winner's
    row) with ``adult_on`` as its sealed coming-of-age date.

    A person found under an older key version or the other crypto suite is re-indexed under the
    current ones here, in this transaction: blind indexes are one-way, so the moment a person
    presents their identifier again is the only time their index can be recomputed. With
    ``replace_adult_on`` a found person's date is replaced by ``adult_on`` (a newer fact).
    """
    candidates = runtime.blind.candidates(field, value)
    current = candidates[0]
    insert_new, lookup = _identity_statements(session.get_bind().dialect.name, len(candidates))
    known = {
        f"{part}_{i}": getattr(c, part)
        for i, c in enumerate(candidates)
        for part in ("suite", "version", "digest")
    }
    # A new person costs one statement: the insert happens only when no index of theirs exists
    # under any suite or key version, and a concurrent registration of the same person loses
    # to the unique index (and reads the winner's row below).
    identity_id = new_id("idn")
    row = {
        "id": identity_id,
        "id_type": id_type,
        "id_number_bidx": current.digest,
        "bidx_version": current.version,
        "bidx_suite": current.suite,
        "adult_on_sealed": seal_adult_on(runtime.master_key, identity_id, adult_on, runtime.suite),
        "created_at": utcnow(),
    }
    created = await session.execute(
        insert_new, {**known, **{f"new_{k}": v for k, v in row.items()}}
    )
    if created.first() is not None:
        return identity_id
    rows = (await session.execute(lookup, known)).all()
    found = {(r[1], r[2], r[3]): str(r[0]) for r in rows}
    for candidate in candidates:  # current suite and version first
        found_id = found.get((candidate.suite, candidate.version, candidate.digest))
        if found_id is None:
            continue
        if candidate != current or replace_adult_on:
            await _refresh_identity(
                session,
                runtime,
                found_id,
                candidate,
                current,
                adult_on if replace_adult_on else None,
            )
        return found_id
    raise RuntimeError("identity neither inserted nor found")  # the unique index forbids it


async def _refresh_identity(
    session: AsyncSession,
    runtime: Runtime,
    identity_id: str,
    old: BlindIndex,
    current: BlindIndex,
    adult_on: date | None,
) -> None:
    """Move one identity's index (and sealed coming-of-age date) to the current suite and key
    version, replacing the date when ``adult_on`` is given; guarded on the old index, so a
    concurrent re-index of the same row is harmless."""
    identity = await session.get(Identity, identity_id, with_for_update=True)
    if identity is None or identity.id_number_bidx not in (old.digest, current.digest):
        return
    identity.id_number_bidx = current.digest
    identity.bidx_version = current.version
    identity.bidx_suite = current.suite
    if adult_on is not None:
        identity.adult_on_sealed = seal_adult_on(
            runtime.master_key, identity.id, adult_on, runtime.suite
        )
    else:
        resealed = reseal(
            runtime.master_key,
            ADULT_ON_SEAL,
            identity.adult_on_sealed,
            identity.id.encode(),
            runtime.suite,
        )
        if resealed is not None:
            identity.adult_on_sealed = resealed
    await session.flush()


_BINDING_COLUMNS = ("client_id", "identity_id", "external_user_id", "created_at")


@functools.cache
def _new_binding(dialect: str) -> Any:
    """:func:`_bind`'s insert of a (client, person) binding unless one exists, built once."""
    table = ClientIdentity.__table__  # type: ignore[attr-defined]
    return (
        insert_ignoring(dialect, table, ["client_id", "identity_id"])
        .values({name: bindparam(name) for name in _BINDING_COLUMNS})
        .returning(table.c.id)
    )


#: The user's verifications that are still live, other than ``new_id``: built once.
_USERS_LIVE = select(Verification).where(
    col(Verification.client_id) == bindparam("client_id"),
    col(Verification.external_user_id) == bindparam("external_user_id"),
    col(Verification.status).in_([s.value for s in LIVE_STATUSES]),
    col(Verification.id) != bindparam("new_id"),
)


async def _bind(
    session: AsyncSession, client: Client, identity_id: str, external_user_id: str
) -> None:
    """One person, one user per client: refuse while another user of the client holds them."""
    created = await session.execute(
        _new_binding(session.get_bind().dialect.name),
        {
            "client_id": client.id,
            "identity_id": identity_id,
            "external_user_id": external_user_id,
            "created_at": utcnow(),
        },
    )
    if created.first() is not None:
        return  # a new binding, locked by this transaction until it commits
    binding = (
        await session.execute(
            select(ClientIdentity)
            .where(ClientIdentity.client_id == client.id, ClientIdentity.identity_id == identity_id)
            .with_for_update()
        )
    ).scalar_one()
    if binding.external_user_id == external_user_id:
        return
    holder_live = (
        await session.execute(
            select(Verification.id)
            .where(
                Verification.client_id == client.id,
                Verification.external_user_id == binding.external_user_id,
                Verification.identity_id == identity_id,
                col(Verification.status).in_([s.value for s in LIVE_STATUSES]),
                # An unfinished verification past its expiry holds nobody.
                or_(
                    col(Verification.status) == Status.VERIFIED.value,
                    col(Verification.expires_at).is_(None),
                    col(Verification.expires_at) > utcnow(),
                ),
            )
            .limit(1)
        )
    ).first()
    if holder_live is not None:
        raise ProblemError(
            "identity_in_use", "This person is already registered to another user of this client"
        )
    binding.external_user_id = external_user_id
    await session.flush()


async def _start_correction(session: AsyncSession, client: Client, new: Verification) -> None:
    """A new verification for a user replaces the user's earlier ones.

    Earlier unfinished attempts are revoked (``superseded``): only the newest submission may
    still pass. An earlier *verified* one is a correction in progress: its tokens stop at once
    and it issues none until the correction passes (it is then revoked as ``corrected``) or
    fails (it is usable again).
    """
    previous = (
        await session.execute(
            _USERS_LIVE,
            {"client_id": client.id, "external_user_id": new.external_user_id, "new_id": new.id},
        )
    ).scalars()
    for old in list(previous):
        if old.status != Status.VERIFIED:
            await lifecycle.transition(
                session,
                old,
                Status.REVOKED,
                expect=[Status(old.status)],
                reason="superseded",
                actor_type="client",
                actor_id=client.id,
                data={"superseded_by": new.id},
            )
            continue
        old.superseded_by = new.id
        await tokens.revoke_for_verification(session, old.id, "correction_pending")
        await audit.record(
            session,
            action="verification.correction_started",
            subject_type="verification",
            subject_id=old.id,
            actor_type="client",
            actor_id=client.id,
            data={"corrected_by": new.id},
        )
    await session.flush()


async def create(
    session: AsyncSession,
    runtime: Runtime,
    client: Client,
    body: VerificationCreate,
    subject: Subject,
    prepared: Prepared,
    *,
    queue: bool = True,
) -> tuple[Verification, list[Check]]:
    """Create a ``pending`` verification with its checks, audit event and sealed subject; with
    ``queue``, the job that runs the checks (else the caller runs them in this transaction)."""
    level = resolve_level(client, body.level)
    await precheck_sms(runtime, client, level, prepared)
    policy = await consented_policy(session, runtime, body.consent.policy_version)
    identity_id = await identity_for(
        session, runtime, field="id_number", value=subject.id_number, adult_on=subject.adult_on
    )
    await _bind(session, client, identity_id, body.external_user_id)
    return await create_pending(
        session,
        runtime,
        client,
        external_user_id=body.external_user_id,
        level=level,
        id_type=body.id_type,
        policy=policy,
        seal=lambda aad: subject.seal(runtime.master_key, aad, runtime.suite),
        check_types=LEVEL_CHECKS[level],
        job_kind="run_checks" if queue else None,
        identity_id=identity_id,
        bidx_version=prepared.bidx_version,
        bidx_suite=prepared.bidx_suite,
        name_bidx=prepared.name_bidx,
        phone_bidx=prepared.phone_bidx,
        identity_hash=prepared.identity_hash,
        masked_name=prepared.masked_name,
        masked_id_number=prepared.masked_id_number,
        masked_phone=prepared.masked_phone,
    )


async def create_pending(
    session: AsyncSession,
    runtime: Runtime,
    client: Client,
    *,
    external_user_id: str,
    level: str,
    id_type: str,
    policy: PolicyRef,
    seal: Callable[[bytes], str],
    check_types: Iterable[str],
    job_kind: str | None,
    audit_data: Mapping[str, object] | None = None,
    **fields: Any,
) -> tuple[Verification, list[Check]]:
    """What every intake path does once its input is accepted: store a ``pending`` verification
    (``fields`` are the path's own columns) with its sealed copy (``seal`` is given the
    verification's id, the associated data that binds it to the row) and its checks, queue the
    job that runs them (``job_kind``; None when the caller runs them in this transaction),
    start the correction of the user's earlier verifications, and audit
    ``verification.created`` (with ``audit_data`` after the level)."""
    now = utcnow()
    verification = Verification(
        client_id=client.id,
        external_user_id=external_user_id,
        status=Status.PENDING,
        level=level,
        id_type=id_type,
        policy_version=policy.version,
        consent_at=now,
        created_at=now,
        updated_at=now,
        expires_at=now + timedelta(seconds=runtime.settings.verification_ttl_seconds),
        **fields,
    )
    verification.sealed_subject = seal(verification.id.encode())
    session.add(verification)
    await session.flush()
    checks = [
        Check(verification_id=verification.id, type=check_type, created_at=now, updated_at=now)
        for check_type in check_types
    ]
    session.add_all(checks)
    if job_kind is not None:
        # Checks run after the commit, in the worker: queued here so a crash cannot lose them.
        outbox.queue(
            session, OutboxJob(kind=job_kind, verification_id=verification.id, run_after=now)
        )
    await session.flush()
    await _start_correction(session, client, verification)
    await audit.record(
        session,
        action="verification.created",
        subject_type="verification",
        subject_id=verification.id,
        actor_type="client",
        actor_id=client.id,
        data={
            "level": level,
            **(audit_data or {}),
            "policy_version": policy.version,
            "policy_sha256": policy.sha256,
        },
    )
    return verification, checks


async def get_for_client(
    session: AsyncSession, client: Client, verification_id: str, *, lock: bool = False
) -> Verification:
    """The client's own verification (with ``lock``, read ``FOR UPDATE`` in this transaction);
    another client's id reads as a missing one."""
    verification = await session.get(
        Verification, verification_id, with_for_update=lock or None, populate_existing=lock
    )
    if verification is None or verification.client_id != client.id:
        raise ProblemError("not_found", "No such verification")
    return verification


async def present(
    session: AsyncSession, verification: Verification, checks: list[Check] | None = None
) -> VerificationOut:
    """The verification object as the API shows it (checks, masked values, next action);
    ``checks`` when the caller holds them already."""
    checks = await checks_of(session, verification.id) if checks is None else checks
    expires_at = None
    if verification.status == Status.AWAITING_CODE:
        expires_at = (
            await session.execute(
                select(SmsCode.expires_at)
                .where(
                    SmsCode.verification_id == verification.id, col(SmsCode.superseded).is_(False)
                )
                .order_by(col(SmsCode.created_at).desc())
                .limit(1)
            )
        ).scalar_one_or_none()
    out = to_out(verification, checks, expires_at)
    out.consent = await consent.consent_of(session, verification)
    if verification.status == Status.ERASED:
        receipt = await erasure.receipt_of(session, verification)
        if receipt is not None:
            out.erasure = Erasure(**receipt.__dict__)
    return out


_CHECKS_OF = select(Check).where(col(Check.verification_id) == bindparam("verification_id"))


async def checks_of(session: AsyncSession, verification_id: str) -> list[Check]:
    rows = (await session.execute(_CHECKS_OF, {"verification_id": verification_id})).scalars().all()
    order = {t: i for i, t in enumerate(LEVEL_CHECKS["L3"])}
    return sorted(rows, key=lambda c: order.get(c.type, 99))


def to_out(
    verification: Verification, checks: list[Check], code_expires_at: datetime | None = None
) -> VerificationOut:
    next_action = None
    if verification.status == Status.AWAITING_CODE and code_expires_at is not None:
        next_action = NextAction(type="submit_sms_code", expires_at=code_expires_at.astimezone(UTC))
    return VerificationOut(
        id=verification.id,
        external_user_id=verification.external_user_id,
        status=verification.status,
        status_reason=verification.status_reason,
        level=verification.level,
        checks=[CheckOut(type=c.type, status=c.status, reason=c.reason) for c in checks],
        masked=Masked(
            real_name=verification.masked_name,
            id_number=verification.masked_id_number,
            phone=verification.masked_phone,
        ),
        next_action=next_action,
        policy_version=verification.policy_version,
        superseded_by=verification.superseded_by,
        created_at=verification.created_at,
        updated_at=verification.updated_at,
    )
