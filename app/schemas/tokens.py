from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.text import SafeStr


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a type name, not a secret)
    expires_in: int
    verification_id: str
    level: str


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: RFC 6749 A.12: a token is visible ASCII (so 4096 characters stay under the body limit).
    token: SafeStr = Field(min_length=1, max_length=4096, pattern=r"^[\x20-\x7e]+$")
    token_type_hint: Literal["access_token"] | None = None


class Introspection(BaseModel):
    """RFC 7662. Only ``active`` is present for inactive tokens."""

    model_config = ConfigDict(extra="allow")

    active: bool


class Jwk(BaseModel):
    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str
    kid: str
    alg: Literal["EdDSA"]
    use: Literal["sig"]


class Jwks(BaseModel):
    keys: list[Jwk]
