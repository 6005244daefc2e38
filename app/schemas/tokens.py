from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.text import SafeStr


class TokenOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJFZERTQSIsImtpZCI6…",
                    "token_type": "Bearer",
                    "expires_in": 900,
                    "verification_id": "ver_01jf3m5k2c8v",
                    "level": "L2",
                }
            ]
        }
    )

    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a type name, not a secret)
    expires_in: int
    verification_id: str
    level: str


class TokenIn(BaseModel):
    """RFC 7662 section 2.1 / RFC 7009 section 2.1, as a form (or, for older callers, JSON)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"token": "eyJhbGciOiJFZERTQSIsImtpZCI6…"}]},
    )

    #: RFC 6749 A.12: a token is visible ASCII (so 4096 characters stay under the body limit).
    token: SafeStr = Field(
        min_length=1,
        max_length=4096,
        pattern=r"^[\x20-\x7e]+$",
        description="The service token (a JWT access token)",
    )
    #: Only a hint (RFC 7662 section 2.1): any registered or unknown type name is accepted.
    token_type_hint: SafeStr | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="`access_token` (other names are accepted and ignored)",
    )


class Introspection(BaseModel):
    """RFC 7662. Only ``active`` is present for inactive tokens."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "active": True,
                    "token_type": "Bearer",
                    "client_id": "cli_01jf3k9x7q2m",
                    "sub": "sub_5b0c1f0e2d9a4c7e8f6b3a2d1c0e9f8a",
                    "aud": "cli_01jf3k9x7q2m",
                    "iss": "http://127.0.0.1:8000",
                    "exp": 1769847300,
                    "iat": 1769846400,
                    "nbf": 1769846400,
                    "jti": "tok_3f2a9c8b7d6e5f4a3b2c1d0e9f8a7b6c",
                    "vid": "ver_01jf3m5k2c8v",
                    "lvl": "L2",
                    "adult": True,
                },
                {"active": False},
            ]
        },
    )

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
