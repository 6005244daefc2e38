from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ServerMetadata(BaseModel):
    """RFC 8414 section 2 (the members this service fills in)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "issuer": "http://127.0.0.1:8000",
                    "jwks_uri": "http://127.0.0.1:8000/.well-known/jwks.json",
                    "introspection_endpoint": "http://127.0.0.1:8000/v1/tokens/introspect",
                    "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
                    "revocation_endpoint": "http://127.0.0.1:8000/v1/tokens/revoke",
                    "revocation_endpoint_auth_methods_supported": ["client_secret_basic"],
                    "response_types_supported": [],
                    "grant_types_supported": [],
                    "access_token_signing_alg_values_supported": ["EdDSA"],
                    "service_documentation": "http://127.0.0.1:8000/docs",
                }
            ]
        },
    )

    issuer: str
    jwks_uri: str
    introspection_endpoint: str
    introspection_endpoint_auth_methods_supported: list[str]
    revocation_endpoint: str
    revocation_endpoint_auth_methods_supported: list[str]
    response_types_supported: list[str]
    grant_types_supported: list[str]
    access_token_signing_alg_values_supported: list[str]
