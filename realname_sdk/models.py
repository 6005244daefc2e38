"""Typed views of the service's JSON answers.

Parsing is lenient in the direction the API contract allows: members the SDK does not know are
ignored (the service may add fields at any time) and stay reachable through each object's
``raw`` mapping; members the SDK needs must be present, otherwise
:class:`~realname_sdk.errors.UnexpectedResponse` is raised by the client.

None of these objects holds personal data in clear: the service only ever answers with masked
values (``张*``, ``110105********002X``, ``138****8000``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

__all__ = [
    "Check",
    "Erasure",
    "Introspection",
    "Masked",
    "NextAction",
    "SandboxMessage",
    "Token",
    "Verification",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CODE = re.compile(r"(?<![0-9])[0-9]{6}(?![0-9])")


def _frozen(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(data))


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} is not a JSON object")
    return value


def _req_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise TypeError(f"member {key!r} is missing or not a string")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_bool(data: Mapping[str, Any], key: str) -> bool | None:
    value = data.get(key)
    return value if isinstance(value, bool) else None


def _opt_time(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Check:
    """One check of a verification (``id_registry``, ``sms_code``, ...)."""

    type: str
    #: ``pending``, ``passed``, ``failed``, ``unavailable``, ... as the service reports it.
    status: str
    #: A stable reason code when the check did not pass (``id_mismatch``, ...), else ``None``.
    reason: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Check:
        """Parse one element of a verification's ``checks`` list."""
        obj = _obj(data, "check")
        return cls(
            type=_req_str(obj, "type"),
            status=_req_str(obj, "status"),
            reason=_opt_str(obj, "reason"),
        )


@dataclass(frozen=True, slots=True)
class Masked:
    """The masked identity the service shows back (never the clear values)."""

    real_name: str | None = None
    id_number: str | None = None
    phone: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Masked:
        """Parse a verification's ``masked`` object (a missing object gives all ``None``)."""
        obj = data if isinstance(data, Mapping) else _EMPTY
        return cls(
            real_name=_opt_str(obj, "real_name"),
            id_number=_opt_str(obj, "id_number"),
            phone=_opt_str(obj, "phone"),
        )


@dataclass(frozen=True, slots=True)
class NextAction:
    """What the integrator should do next, e.g. ``submit_sms_code`` before ``expires_at``."""

    type: str
    expires_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Any) -> NextAction | None:
        """Parse ``next_action``; ``None`` when there is nothing to do."""
        if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
            return None
        return cls(type=data["type"], expires_at=_opt_time(data, "expires_at"))


@dataclass(frozen=True, slots=True)
class Erasure:
    """The receipt of an erasure (Cybersecurity Law Art. 43), tied into the audit hash chain."""

    receipt_id: str
    erased_at: datetime | None
    audit_event_seq: int | None
    audit_event_hash: str | None

    @classmethod
    def from_json(cls, data: Any) -> Erasure | None:
        """Parse a verification's ``erasure`` object; ``None`` when absent."""
        if not isinstance(data, Mapping) or not isinstance(data.get("receipt_id"), str):
            return None
        return cls(
            receipt_id=data["receipt_id"],
            erased_at=_opt_time(data, "erased_at"),
            audit_event_seq=_opt_int(data, "audit_event_seq"),
            audit_event_hash=_opt_str(data, "audit_event_hash"),
        )


@dataclass(frozen=True, slots=True)
class Verification:
    """A verification as the service reports it.

    ``status`` is one of ``pending``, ``awaiting_code``, ``verified``, ``rejected``,
    ``needs_review``, ``expired``, ``locked``, ``revoked``, ``erased`` (kept as a plain string so
    that a status added later does not break parsing).
    """

    id: str
    status: str
    level: str | None
    checks: tuple[Check, ...]
    masked: Masked
    next_action: NextAction | None
    created_at: datetime | None
    updated_at: datetime | None
    external_user_id: str | None = None
    #: A stable reason code for ``rejected`` / ``needs_review`` / ... (``id_mismatch``, ...).
    status_reason: str | None = None
    policy_version: str | None = None
    #: Present after :meth:`~realname_sdk.RealnameClient.erase`.
    erasure: Erasure | None = None
    #: The whole JSON object, including members this SDK version does not know.
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)

    @property
    def is_verified(self) -> bool:
        """True when the person's identity has been verified (a token can be issued)."""
        return self.status == "verified"

    @classmethod
    def from_json(cls, data: Any) -> Verification:
        """Parse a verification object."""
        obj = _obj(data, "verification")
        checks = obj.get("checks")
        return cls(
            id=_req_str(obj, "id"),
            status=_req_str(obj, "status"),
            level=_opt_str(obj, "level"),
            checks=tuple(Check.from_json(c) for c in checks) if isinstance(checks, list) else (),
            masked=Masked.from_json(obj.get("masked")),
            next_action=NextAction.from_json(obj.get("next_action")),
            created_at=_opt_time(obj, "created_at"),
            updated_at=_opt_time(obj, "updated_at"),
            external_user_id=_opt_str(obj, "external_user_id"),
            status_reason=_opt_str(obj, "status_reason"),
            policy_version=_opt_str(obj, "policy_version"),
            erasure=Erasure.from_json(obj.get("erasure")),
            raw=_frozen(obj),
        )


@dataclass(frozen=True, slots=True)
class Token:
    """A service token issued for a verified verification.

    Hand ``access_token`` to your backend (for example as ``Authorization: Bearer …``); the backend
    checks it offline with :class:`~realname_sdk.TokenVerifier`. The token is a bearer credential:
    it is left out of ``repr`` so that it does not end up in logs by accident.
    """

    access_token: str = field(repr=False)
    token_type: str
    #: Lifetime in seconds from issue.
    expires_in: int
    verification_id: str | None = None
    level: str | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Token:
        """Parse the answer of ``POST /v1/verifications/{id}/tokens``."""
        obj = _obj(data, "token")
        expires_in = _opt_int(obj, "expires_in")
        if expires_in is None:
            raise TypeError("member 'expires_in' is missing or not an integer")
        return cls(
            access_token=_req_str(obj, "access_token"),
            token_type=_req_str(obj, "token_type"),
            expires_in=expires_in,
            verification_id=_opt_str(obj, "verification_id"),
            level=_opt_str(obj, "level"),
            raw=_frozen({k: v for k, v in obj.items() if k != "access_token"}),
        )


@dataclass(frozen=True, slots=True)
class Introspection:
    """An RFC 7662 introspection answer.

    When ``active`` is false every other attribute is ``None``: the service says nothing about
    tokens that are expired, revoked, unknown or issued to another client.
    """

    active: bool
    client_id: str | None = None
    token_type: str | None = None
    sub: str | None = None
    aud: str | None = None
    iss: str | None = None
    exp: int | None = None
    iat: int | None = None
    nbf: int | None = None
    jti: str | None = None
    verification_id: str | None = None
    level: str | None = None
    adult: bool | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Introspection:
        """Parse the answer of ``POST /v1/tokens/introspect``."""
        obj = _obj(data, "introspection")
        active = obj.get("active")
        if not isinstance(active, bool):
            raise TypeError("member 'active' is missing or not a boolean")
        if not active:
            return cls(active=False, raw=_frozen(obj))
        return cls(
            active=True,
            client_id=_opt_str(obj, "client_id"),
            token_type=_opt_str(obj, "token_type"),
            sub=_opt_str(obj, "sub"),
            aud=_opt_str(obj, "aud"),
            iss=_opt_str(obj, "iss"),
            exp=_opt_int(obj, "exp"),
            iat=_opt_int(obj, "iat"),
            nbf=_opt_int(obj, "nbf"),
            jti=_opt_str(obj, "jti"),
            verification_id=_opt_str(obj, "vid"),
            level=_opt_str(obj, "lvl"),
            adult=_opt_bool(obj, "adult"),
            raw=_frozen(obj),
        )


@dataclass(frozen=True, slots=True)
class SandboxMessage:
    """An SMS the test-mode sandbox "delivered" (test-mode API keys only)."""

    id: str
    verification_id: str | None
    #: The masked phone number it was sent to.
    to: str | None
    body: str = field(repr=False)
    created_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def code(self) -> str | None:
        """The six-digit one-time code in the message body, or ``None`` if there is none."""
        match = _CODE.search(self.body)
        return match.group(0) if match else None

    @classmethod
    def from_json(cls, data: Any) -> SandboxMessage:
        """Parse one element of ``GET /v1/sandbox/messages``'s ``data`` list."""
        obj = _obj(data, "sandbox message")
        return cls(
            id=_req_str(obj, "id"),
            verification_id=_opt_str(obj, "verification_id"),
            to=_opt_str(obj, "to"),
            body=_req_str(obj, "body"),
            created_at=_opt_time(obj, "created_at"),
            expires_at=_opt_time(obj, "expires_at"),
        )

    @staticmethod
    def list_from_json(data: Any) -> list[SandboxMessage]:
        """Parse the whole ``{"data": [...]}`` answer, newest message first."""
        items = _obj(data, "sandbox messages").get("data")
        if not isinstance(items, list):
            raise TypeError("member 'data' is missing or not a list")
        return [SandboxMessage.from_json(m) for m in items]
