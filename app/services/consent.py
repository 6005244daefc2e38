"""Consent receipts: proof, signed by the service, of which published collection rules a
client's user agreed to and when (Art. 41).

A receipt is a compact JWS (``typ: consent-receipt+jwt``, EdDSA) signed with the token signing
key, so anyone holding the JWKS (``/.well-known/jwks.json``) can check it offline. It is signed
when asked for, with the key active then: fetch a fresh one to re-verify after a key rotation.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Verification
from app.models._types import utcnow
from app.schemas.verification import ConsentOut
from app.services import policies
from app.services.runtime import Runtime

RECEIPT_TYPE = "consent-receipt+jwt"


def receipt_id(verification: Verification) -> str:
    """Stable per verification (one consent each)."""
    return "rcpt_" + verification.id.removeprefix("ver_")


async def consent_of(session: AsyncSession, verification: Verification) -> ConsentOut:
    policy = await policies.published(session, verification.policy_version)
    return ConsentOut(
        policy_version=verification.policy_version,
        policy_sha256=policy.sha256 if policy is not None else None,
        consented_at=verification.consent_at.astimezone(UTC),
        receipt_id=receipt_id(verification),
    )


async def signed_receipt(
    session: AsyncSession, runtime: Runtime, verification: Verification
) -> dict[str, Any]:
    """The receipt as JSON: the consent, and the same facts as a JWS over them."""
    consent = await consent_of(session, verification)
    key = await runtime.keyring.signing_key(session)
    claims = {
        "iss": runtime.settings.issuer,
        "aud": verification.client_id,
        "iat": int(utcnow().timestamp()),
        "jti": consent.receipt_id,
        "vid": verification.id,
        "external_user_id": verification.external_user_id,
        "policy_version": consent.policy_version,
        "policy_sha256": consent.policy_sha256,
        "consented_at": consent.consented_at.isoformat().replace("+00:00", "Z"),
    }
    receipt = jwt.encode(
        claims, key.private, algorithm="EdDSA", headers={"kid": key.kid, "typ": RECEIPT_TYPE}
    )
    return {
        "receipt_id": consent.receipt_id,
        "verification_id": verification.id,
        "consent": consent.model_dump(mode="json"),
        "receipt": receipt,
        "kid": key.kid,
        "jwks_uri": "/.well-known/jwks.json",
    }
