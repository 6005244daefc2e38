"""Service tokens: issued only for verified verifications, short-lived EdDSA JWTs that backends
check offline against the JWKS, and introspectable (RFC 7662) so that revocation takes effect
at once."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jwt
from sqlalchemy import bindparam, exists, false, update
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.crypto import DEFAULT_SUITE, Suite, keyed_hash, seal, unseal
from app.db import session_scope
from app.errors import ProblemError
from app.hotcache import TokenState, tokens_changed
from app.logging import request_id_var
from app.models import (
    LIVE_STATUSES,
    Check,
    Client,
    Identity,
    ServiceToken,
    SigningKey,
    Status,
    Verification,
)
from app.models._types import utcnow
from app.services import audit, emergency, events
from app.services.runtime import Runtime

REQUIRED_CLAIMS = ["exp", "iat", "nbf", "aud", "iss", "sub", "jti", "vid", "lvl"]
#: RFC 9068 section 2.1: the media type of JWT access tokens, in the ``typ`` header.
ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 (a media type, not a secret)
#: The issuer of tokens signed before issuers became the service's URL. Such tokens are still
#: accepted (signature, audience, expiry and state checked as ever) until they expire: at most
#: ``REALNAME_TOKEN_TTL_SECONDS`` after the upgrade.
LEGACY_ISSUER = "urn:realname"
INACTIVE: dict[str, Any] = {"active": False}


@dataclass(frozen=True)
class Issued:
    token: str
    expires_in: int
    jti: str
    verification_id: str
    level: str


def subject_for(master_key: bytes, client_id: str, identity_id: str) -> str:
    """Stable for one client and one person; unlinkable between clients."""
    return (
        "sub_" + keyed_hash(master_key, "token-subject", f"{client_id}:{identity_id}".encode())[:32]
    )


ADULT_ON_SEAL = "adult-on/v1"


def seal_adult_on(
    master_key: bytes, identity_id: str, adult_on: date, suite: Suite = DEFAULT_SUITE
) -> str:
    return seal(
        master_key, ADULT_ON_SEAL, adult_on.isoformat().encode(), identity_id.encode(), suite
    )


def adult_on_of(master_key: bytes, identity: Identity) -> date:
    raw = unseal(master_key, ADULT_ON_SEAL, identity.adult_on_sealed, identity.id.encode())
    return date.fromisoformat(raw.decode())


def is_adult(adult_on: date, timezone: str, now: datetime | None = None) -> bool:
    today = (now or utcnow()).astimezone(ZoneInfo(timezone)).date()
    return today >= adult_on


async def _correction_pending(session: AsyncSession, verification: Verification) -> bool:
    if verification.superseded_by is None:
        return False
    newer = await session.get(Verification, verification.superseded_by)
    if newer is None or newer.status not in LIVE_STATUSES or newer.status == Status.VERIFIED:
        return False
    # An abandoned correction past its expiry no longer blocks the verified original.
    return newer.expires_at is None or newer.expires_at > utcnow()


async def _refuse(session: AsyncSession, verification: Verification, detail: str) -> None:
    checks = (
        await session.execute(select(Check).where(Check.verification_id == verification.id))
    ).scalars()
    missing = [c.type for c in checks if c.status != "passed"]
    raise ProblemError(
        "verification_not_verified",
        detail,
        extra={
            "status": 409,
            "verification_status": verification.status,
            "missing_checks": missing,
        },
    )


def _issuing(key_usable: Any, *, skip_locked: bool) -> Any:
    return (
        select(Verification, Identity, key_usable.label("key_usable"))
        .outerjoin(Identity, col(Identity.id) == col(Verification.identity_id))
        .where(col(Verification.id).in_(bindparam("verification_ids", expanding=True)))
        .order_by(col(Verification.id))
        .with_for_update(of=Verification, skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )


# :func:`issue_all`'s statements, built once (bound parameters: the verifications' ids and the
# cached signing key's ``kid``; the new tokens' columns), by (key cached, rows held skipped).
_KEY_USABLE = exists().where(
    col(SigningKey.kid) == bindparam("kid"), col(SigningKey.withdrawn_at).is_(None)
)
_ISSUING = {
    (cached, skip): _issuing(_KEY_USABLE if cached else false(), skip_locked=skip)
    for cached in (False, True)
    for skip in (False, True)
}
_TOKENS = ServiceToken.__table__  # type: ignore[attr-defined]
_NEW_TOKEN = _TOKENS.insert().values(
    {
        name: bindparam(name)
        for name in ("jti", "client_id", "verification_id", "kid", "issued_at", "expires_at")
    }
)


@dataclass(frozen=True)
class IssueRequest:
    """One token asked for: by ``client``, for its verification ``verification_id``, in the
    request ``request_id`` (the audit event's)."""

    client: Client
    verification_id: str
    request_id: str | None = None


async def issue(
    session: AsyncSession, runtime: Runtime, client: Client, verification_id: str
) -> Issued:
    """Sign a token for the client's verification ``verification_id``: 404 not_found for a
    missing one or another client's, 409 verification_not_verified unless it is verified,
    503 issuance_suspended while the operator suspends issuance."""
    (outcome,) = await issue_all(session, runtime, [IssueRequest(client, verification_id)])
    if isinstance(outcome, ProblemError):
        raise outcome
    assert outcome is not None  # waited for its row
    return outcome


async def _refusal(
    session: AsyncSession,
    runtime: Runtime,
    asked: IssueRequest,
    row: Any,
    now: datetime,
) -> ProblemError | None:
    """Why ``asked`` gets no token (its verification's locked ``row``), or None."""
    try:
        await emergency.ensure_issuing(
            session, asked.client.id, runtime.settings.issuance_retry_after_seconds
        )
        if row is None or row[0].client_id != asked.client.id:
            raise ProblemError("not_found", "No such verification")
        verification = row[0]
        if verification.status != Status.VERIFIED:
            await _refuse(
                session,
                verification,
                f"The verification is {verification.status}; tokens need verified",
            )
        if verification.expires_at is not None and verification.expires_at <= now:
            await _refuse(session, verification, "The verification has lapsed; verify again")
        if await _correction_pending(session, verification):
            await _refuse(session, verification, "A correction of this user's identity is pending")
    except ProblemError as refused:
        return refused
    return None


async def issue_all(
    session: AsyncSession, runtime: Runtime, asked: Sequence[IssueRequest], *, wait: bool = True
) -> list[Issued | ProblemError | None]:
    """:func:`issue` for each of ``asked`` in the session's one transaction (a group commit):
    one locking read of every verification, one insert of the tokens, their audit events in
    one append. Each gets its token or the problem that refuses it; the others go on.

    Without ``wait``, a verification whose row another transaction holds (or that is not
    there) is skipped, not waited for: its outcome is None, to be issued alone. A batch that
    waited for one row while holding the others could close a cycle with a transaction that
    holds that row and wants one of them (a right code retiring the user's older verified
    verification, an erasure), and would hold up every request in it."""
    # Only a key this process holds already: reading (or creating) the active key waits until
    # the checks have passed, so that a refused request never leaves a key it rolled back.
    cached = runtime.keyring.cached_active()
    # One statement: the verifications under their row locks (so a revocation racing an issue
    # is either seen or sees the token), their identities, and whether the cached signing key
    # is still there and not withdrawn (by a revocation of every token in another process).
    params: dict[str, Any] = {"verification_ids": sorted({a.verification_id for a in asked})}
    if cached is not None:
        params["kid"] = cached.kid
    statement = _ISSUING[cached is not None, not wait]
    rows = {row[0].id: row for row in await session.execute(statement, params)}
    now = utcnow()
    outcomes: list[Issued | ProblemError | None] = [None] * len(asked)
    for i, one in enumerate(asked):
        row = rows.get(one.verification_id)
        if row is not None or wait:
            outcomes[i] = await _refusal(session, runtime, one, row, now)
    granted = [
        i for i, one in enumerate(asked) if one.verification_id in rows and outcomes[i] is None
    ]
    if not granted:
        return outcomes
    settings = runtime.settings
    key_usable = rows[asked[granted[0]].verification_id][2]
    if cached is None or not key_usable:
        runtime.keyring.forget_active()
        key = await runtime.keyring.signing_key(session)
    else:
        key = cached
    expires_at = now + timedelta(seconds=settings.token_ttl_seconds)
    new_tokens: list[dict[str, Any]] = []
    entries: list[audit.Entry] = []
    for i in granted:
        client = asked[i].client
        verification, identity, _ = rows[asked[i].verification_id]
        assert identity is not None
        jti = "tok_" + secrets.token_hex(16)
        claims = {
            "iss": settings.issuer,
            "aud": client.id,
            "sub": subject_for(runtime.master_key, client.id, identity.id),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": jti,
            "vid": verification.id,
            "lvl": verification.level,
            "adult": is_adult(
                adult_on_of(runtime.master_key, identity), settings.legal_timezone, now
            ),
            "client_id": client.id,
        }
        token = jwt.encode(
            claims,
            key.private,
            algorithm="EdDSA",
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYP},
        )
        outcomes[i] = Issued(
            token, settings.token_ttl_seconds, jti, verification.id, verification.level
        )
        new_tokens.append(
            {
                "jti": jti,
                "client_id": client.id,
                "verification_id": verification.id,
                "kid": key.kid,
                "issued_at": now,
                "expires_at": expires_at,
            }
        )
        entries.append(
            audit.Entry(
                action="token.issued",
                subject_type="verification",
                subject_id=verification.id,
                actor_type="client",
                actor_id=client.id,
                data={"jti": jti, "kid": key.kid, "level": verification.level},
                request_id=asked[i].request_id,
            )
        )
    await session.flush()  # a signing key made above goes first
    await session.execute(_NEW_TOKEN, new_tokens if len(new_tokens) > 1 else new_tokens[0])
    await audit.record_all(session, entries)
    return outcomes


async def issue_batch(
    runtime: Runtime, asked: Sequence[IssueRequest]
) -> list[Issued | BaseException]:
    """A group commit's write (app.batching): ``asked`` in one transaction that waits for no
    row held elsewhere; those requests, and all of them should that transaction fail before
    its commit (a lost connection), are then issued one at a time, each in its own. A failed
    commit is every request's error: whether it took effect is unknown, and issuing again
    could give one request two tokens."""
    # Events of the batch as a whole (a signing key made for it) go under its first request.
    request_id_var.set(asked[0].request_id)
    outcomes: list[Issued | ProblemError | None] = [None] * len(asked)
    if len(asked) > 1:
        written = False
        try:
            async with session_scope(runtime.sessions) as session:
                outcomes = await issue_all(session, runtime, asked, wait=False)
                written = True
        except Exception:
            if written:
                raise
    answers: list[Issued | BaseException] = []
    for one, outcome in zip(asked, outcomes, strict=True):
        if outcome is None:
            try:
                async with session_scope(runtime.sessions) as session:
                    request_id_var.set(one.request_id)
                    outcome = await issue(session, runtime, one.client, one.verification_id)
            except Exception as exc:
                answers.append(exc)
                continue
        answers.append(outcome)
    return answers


#: Where a read-only path gets its session from, only when it needs one (app.db.LazySession).
SessionSource = Callable[[], Awaitable[AsyncSession]]


def _source(session: AsyncSession) -> SessionSource:
    async def given() -> AsyncSession:
        return session

    return given


async def _decode(
    session: SessionSource, runtime: Runtime, client: Client, token: str, *, verify_exp: bool = True
) -> dict[str, Any] | None:
    if not isinstance(token, str) or len(token) > 4096:
        return None
    try:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        if header.get("alg") != "EdDSA" or not isinstance(kid, str):
            return None
        typ = str(header.get("typ", "")).lower()
        at_jwt = typ in (ACCESS_TOKEN_TYP, "application/" + ACCESS_TOKEN_TYP)
        public = runtime.keyring.cached_public_key(kid) or await runtime.keyring.public_key(
            await session(), kid
        )
        if public is None:
            return None
        claims: dict[str, Any] = jwt.decode(
            token,
            public,
            algorithms=["EdDSA"],
            audience=client.id,
            issuer=[runtime.settings.issuer, LEGACY_ISSUER],
            options={"require": REQUIRED_CLAIMS, "verify_exp": verify_exp},
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    # RFC 9068 section 4: only JWT access tokens, never another kind of JWT; tokens of the former
    # issuer predate the header (PyJWT wrote "typ": "JWT") and pass until they expire.
    if not at_jwt and claims["iss"] != LEGACY_ISSUER:
        return None
    return claims


async def _claims_for_introspection(
    session: SessionSource, runtime: Runtime, client: Client, token: str
) -> dict[str, Any] | None:
    """Verified claims, reusing an earlier verification of the same token for this client
    (``exp``/``nbf`` are checked again each time)."""
    key = (client.id, token)
    claims: dict[str, Any] | None = runtime.token_claims.get(key)
    if claims is None:
        claims = await _decode(session, runtime, client, token)
        if claims is not None:
            runtime.token_claims.put(key, claims)
        return claims
    now = utcnow().timestamp()
    if claims["exp"] <= now or claims["nbf"] > now:
        return None
    return claims


async def _token_state(
    session: SessionSource, runtime: Runtime, client: Client, jti: str
) -> TokenState | None:
    states = runtime.token_states
    key = f"{client.id}:{jti}"
    epoch = states.epoch()  # read before the database: see app.hotcache
    cached = states.get(key, epoch)
    if cached is not None:
        return cached
    row = (
        await (await session()).execute(
            sa_select(
                col(ServiceToken.verification_id),
                col(ServiceToken.revoked_at),
                col(Verification.status),
                col(Verification.expires_at),
                col(ServiceToken.issued_at),
                emergency.cutoff_subquery(client.id),
            )
            .join(Verification, col(Verification.id) == col(ServiceToken.verification_id))
            .where(col(ServiceToken.jti) == jti, col(ServiceToken.client_id) == client.id)
        )
    ).first()
    if row is None:
        return None
    # A revocation of every token also catches one whose issue committed after it (row[5]).
    cut_off = row[5] is not None and row[4] <= row[5]
    state = TokenState(
        verification_id=row[0],
        revoked=row[1] is not None or cut_off,
        status=row[2],
        expires_at=row[3],
    )
    states.put(key, epoch, state)
    return state


#: Claims an active introspection answer repeats from the token.
_ANSWERED_CLAIMS = ("client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "vid", "lvl")


async def introspect(
    session: SessionSource, runtime: Runtime, client: Client, token: str
) -> dict[str, Any]:
    """RFC 7662: active only if signed by us, for this client, unexpired, unrevoked, and its
    verification still verified. ``session`` is asked for only when a cache cannot answer."""
    claims = await _claims_for_introspection(session, runtime, client, token)
    if claims is None:
        return INACTIVE
    state = await _token_state(session, runtime, client, claims["jti"])
    if state is None or state.verification_id != claims["vid"]:
        return INACTIVE
    if state.revoked or state.status != Status.VERIFIED:
        return INACTIVE
    if state.expires_at is not None and state.expires_at <= utcnow():
        return INACTIVE
    answer: dict[str, Any] = {"active": True, "token_type": "Bearer"}
    answer.update((k, claims[k]) for k in (*_ANSWERED_CLAIMS, "adult") if k in claims)
    return answer


async def revoke(session: AsyncSession, runtime: Runtime, client: Client, token: str) -> None:
    """RFC 7009: revoke the client's own token; unknown or foreign tokens are ignored."""
    claims = await _decode(_source(session), runtime, client, token, verify_exp=False)
    if claims is None:
        return
    result = await session.execute(
        update(ServiceToken)
        .where(
            col(ServiceToken.jti) == claims["jti"],
            col(ServiceToken.client_id) == client.id,
            col(ServiceToken.revoked_at).is_(None),
        )
        .values(revoked_at=utcnow(), revoked_reason="client_revoked")
    )
    # Also when it was revoked already: a retry (after a 503) must tell other processes again.
    tokens_changed(session)
    if result.rowcount:  # type: ignore[attr-defined]
        await audit.record(
            session,
            action="token.revoked",
            subject_type="verification",
            subject_id=claims.get("vid"),
            actor_type="client",
            actor_id=client.id,
            data={"jti": claims["jti"], "reason": "client_revoked"},
        )
        verification = await session.get(Verification, claims["vid"])
        await events.emit(
            session,
            client_id=client.id,
            type=events.TOKEN_REVOKED,
            verification=verification,
            reason="client_revoked",
            jti=claims["jti"],
        )


async def revoke_for_verification(session: AsyncSession, verification_id: str, reason: str) -> int:
    """Revoke every live token of a verification (no longer verified, erased, corrected),
    with a ``token.revoked`` event for each."""
    revoked = (
        await session.execute(
            update(ServiceToken)
            .where(
                col(ServiceToken.verification_id) == verification_id,
                col(ServiceToken.revoked_at).is_(None),
            )
            .values(revoked_at=utcnow(), revoked_reason=reason)
            .returning(col(ServiceToken.jti), col(ServiceToken.client_id))
            .execution_options(synchronize_session=False)
        )
    ).all()
    # Also when nothing was revoked: the verification's status is changing with it.
    tokens_changed(session)
    if revoked:
        verification = await session.get(Verification, verification_id)
        for jti, client_id in revoked:
            await events.emit(
                session,
                client_id=client_id,
                type=events.TOKEN_REVOKED,
                verification=verification,
                reason=reason,
                jti=jti,
            )
    return len(revoked)
