"""Admin accounts, sign-in and sessions.

- Passwords: argon2id at the password profile (argon2-cffi's RFC 9106 low-memory default),
  rehashed on sign-in when the profile changes.
- Throttling: failed sign-ins count per (username, address) and per address, never per
  account alone, so guessing someone's password from elsewhere cannot lock them out.
- Answers and timing are the same whether or not the username exists (a dummy hash is
  verified for unknown names).
- Sessions: random bearer tokens, stored as keyed hashes, with idle and absolute timeouts.
- Optional TOTP (RFC 6238, SHA-1, 6 digits, 30 s, one step of clock drift). Each code is good
  once (§5.2): the step of the last accepted code is stored per admin, and a code of that step
  or an earlier one is refused; the update is guarded, so of two racing sign-ins one wins.
- Signing in with ``end_other_sessions`` ends every other session of the admin.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, or_, select

from app.crypto import keyed_hash, seal, unseal
from app.errors import ProblemError
from app.models import Admin, AdminSession
from app.models._types import utcnow
from app.ratelimit import raise_refusal
from app.services import audit
from app.services.runtime import Runtime

ROLES = ("reviewer", "auditor", "admin")
TOTP_SEAL = "admin-totp/v1"
_DUMMY_PASSWORD = "not-a-real-password"  # noqa: S105 (hashed once, to equalise timing)


def totp_for(secret: bytes) -> TOTP:
    # RFC 6238 with SHA-1: what authenticator apps implement; HMAC-SHA-1 is not broken.
    return TOTP(secret, 6, SHA1(), 30, enforce_key_length=False)  # noqa: S303


TOTP_STEP = 30


def totp_step(secret: bytes, code: str, now: float | None = None) -> int | None:
    """RFC 6238 check, accepting the current step and one step either side (clock drift).
    Returns the time step the code belongs to, or None."""
    if not (isinstance(code, str) and len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    moment = time.time() if now is None else now
    totp = totp_for(secret)
    for drift in (0, -TOTP_STEP, TOTP_STEP):
        at = int(moment + drift)
        try:
            totp.verify(code.encode(), at)
            return at // TOTP_STEP
        except InvalidToken:
            continue
    return None


def totp_ok(secret: bytes, code: str, now: float | None = None) -> bool:
    """Whether ``code`` is a valid code now (without the replay rule; see ``sign_in``)."""
    return totp_step(secret, code, now) is not None


async def _claim_totp_step(session: AsyncSession, admin: Admin, step: int) -> bool:
    """Record ``step`` as the admin's last accepted one, unless it (or a later one) already
    is: a guarded update, so a code replayed in a race is accepted at most once."""
    claimed = await session.execute(
        update(Admin)
        .where(
            col(Admin.id) == admin.id,
            or_(col(Admin.totp_last_step).is_(None), col(Admin.totp_last_step) < step),
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(claimed, "rowcount", 0) == 1)


def totp_uri(secret: bytes, username: str) -> str:
    return totp_for(secret).get_provisioning_uri(username, "realname")


@dataclass(frozen=True)
class SignedIn:
    token: str
    csrf_token: str
    admin: Admin
    session: AdminSession


async def create_admin(
    session: AsyncSession,
    runtime: Runtime,
    *,
    username: str,
    password: str,
    role: str,
    with_totp: bool = False,
) -> tuple[Admin, bytes | None]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if len(password) < 12:
        raise ValueError("the password must have at least 12 characters")
    admin = Admin(
        username=username, password_hash=await runtime.password_hasher.hash(password), role=role
    )
    secret = None
    if with_totp:
        secret = secrets.token_bytes(20)
        admin.totp_secret_sealed = seal(runtime.master_key, TOTP_SEAL, secret, admin.id.encode())
    session.add(admin)
    await session.flush()
    await audit.record(
        session,
        action="admin.created",
        subject_type="admin",
        subject_id=admin.id,
        actor_type="system",
        actor_id=None,
        data={"role": role, "totp": with_totp},
    )
    return admin, secret


def _token_hash(runtime: Runtime, token: str) -> str:
    return keyed_hash(runtime.master_key, "admin-session", token.encode())


async def sign_in(
    session: AsyncSession,
    runtime: Runtime,
    *,
    username: str,
    password: str,
    totp: str | None,
    address: str,
    end_other_sessions: bool = False,
) -> SignedIn:
    username_key = keyed_hash(runtime.master_key, "admin-login", username.casefold().encode())
    raise_refusal(
        await runtime.limits.login_refused(username_key, address),
        "Too many failed sign-ins",
        limit="admin_login",
    )
    admin = (
        await session.execute(select(Admin).where(Admin.username == username))
    ).scalar_one_or_none()
    encoded = admin.password_hash if admin is not None else await _dummy_hash(runtime)
    password_ok = await runtime.password_hasher.verify(encoded, password)
    ok = admin is not None and password_ok and not admin.disabled
    if ok and admin is not None and admin.totp_secret_sealed is not None:
        secret = unseal(runtime.master_key, TOTP_SEAL, admin.totp_secret_sealed, admin.id.encode())
        step = totp_step(secret, totp) if totp is not None else None
        ok = step is not None and await _claim_totp_step(session, admin, step)
    if not ok or admin is None:
        await runtime.limits.record_login_failure(username_key, address)
        await audit.record(
            session,
            action="admin.sign_in_failed",
            subject_type="admin",
            subject_id=admin.id if admin else None,
            actor_type="anonymous",
            actor_id=None,
            data={},
        )
        raise ProblemError("invalid_credentials", commit=True)
    if runtime.password_hasher.needs_rehash(admin.password_hash):
        admin.password_hash = await runtime.password_hasher.hash(password)
    now = utcnow()
    admin.last_login_at = now
    ended = 0
    if end_other_sessions:
        result = await session.execute(
            update(AdminSession)
            .where(col(AdminSession.admin_id) == admin.id, col(AdminSession.revoked_at).is_(None))
            .values(revoked_at=now)
        )
        ended = int(getattr(result, "rowcount", 0) or 0)
    token = secrets.token_urlsafe(32)
    row = AdminSession(
        token_hash=_token_hash(runtime, token),
        admin_id=admin.id,
        csrf_token=secrets.token_urlsafe(24),
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=runtime.settings.admin_session_absolute_hours),
    )
    session.add(row)
    await session.flush()
    await audit.record(
        session,
        action="admin.signed_in",
        subject_type="admin",
        subject_id=admin.id,
        actor_type="admin",
        actor_id=admin.id,
        data={"role": admin.role, "other_sessions_ended": ended},
    )
    return SignedIn(token, row.csrf_token, admin, row)


_dummy: dict[str, str] = {}


async def _dummy_hash(runtime: Runtime) -> str:
    if "hash" not in _dummy:
        _dummy["hash"] = await runtime.password_hasher.hash(_DUMMY_PASSWORD)
    return _dummy["hash"]


async def authenticate(
    session: AsyncSession, runtime: Runtime, token: str
) -> tuple[Admin, AdminSession]:
    """The admin behind a session token; 401 session_expired when it has ended."""
    row = await session.get(AdminSession, _token_hash(runtime, token))
    now = utcnow()
    idle = timedelta(minutes=runtime.settings.admin_session_idle_minutes)
    if (
        row is None
        or row.revoked_at is not None
        or row.expires_at <= now
        or row.last_seen_at + idle <= now
    ):
        raise ProblemError("session_expired", headers={"WWW-Authenticate": "Bearer"})
    admin = await session.get(Admin, row.admin_id)
    if admin is None or admin.disabled:
        raise ProblemError("session_expired", headers={"WWW-Authenticate": "Bearer"})
    if now - row.last_seen_at > timedelta(seconds=30):  # spare a write on every request
        row.last_seen_at = now
    return admin, row


async def sign_out(session: AsyncSession, admin_session: AdminSession) -> None:
    await session.execute(
        update(AdminSession)
        .where(col(AdminSession.token_hash) == admin_session.token_hash)
        .values(revoked_at=utcnow())
    )
    await audit.record(
        session,
        action="admin.signed_out",
        subject_type="admin",
        subject_id=admin_session.admin_id,
        actor_type="admin",
        actor_id=admin_session.admin_id,
        data={},
    )


def b32(secret: bytes) -> str:
    return base64.b32encode(secret).decode().rstrip("=")
