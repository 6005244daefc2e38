"""OAuth 2.0 Authorization Server Metadata (RFC 8414): where a gateway or an SDK finds the
issuer, the JWKS and the introspection and revocation endpoints, and how to authenticate there."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import RuntimeDep
from app.schemas.discovery import ServerMetadata

router = APIRouter(tags=["tokens"])

#: RFC 6749 section 2.3.1 names: a client id and API key sent with HTTP Basic. (An API key as
#: ``Authorization: Bearer`` works too, but has no registered name.)
AUTH_METHODS = ["client_secret_basic"]
SIGNING_ALGORITHMS = ["EdDSA"]


def metadata(issuer: str) -> dict[str, Any]:
    """The RFC 8414 document for ``issuer`` (the service's public URL)."""
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "introspection_endpoint": f"{issuer}/v1/tokens/introspect",
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint": f"{issuer}/v1/tokens/revoke",
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        # No authorization or token endpoint (so no grant types): a client gets a token for a
        # verified user from POST /v1/verifications/{id}/tokens.
        "response_types_supported": [],
        "grant_types_supported": [],
        # The algorithms of the JWT access tokens (RFC 9068) this issuer signs.
        "access_token_signing_alg_values_supported": SIGNING_ALGORITHMS,
        "service_documentation": f"{issuer}/docs",
    }


@router.get(
    "/.well-known/oauth-authorization-server",
    response_model=ServerMetadata,
    summary="Authorization server metadata (RFC 8414)",
    description="The issuer of service tokens, its JWKS, and the introspection (RFC 7662) and "
    "revocation (RFC 7009) endpoints with the client authentication they take. The issuer is "
    "`REALNAME_PUBLIC_URL`.",
)
async def server_metadata(runtime: RuntimeDep) -> JSONResponse:
    return JSONResponse(
        metadata(runtime.settings.issuer), headers={"Cache-Control": "public, max-age=300"}
    )
