"""Python client SDK of the realname identity verification service.

Three parts:

* :class:`RealnameClient` / :class:`AsyncRealnameClient` call the integrator API with your API key:
  start a verification, submit the SMS code, issue a service token, introspect or revoke it,
  erase a verification.
* :class:`TokenVerifier` checks service tokens offline (EdDSA, against the service's JWKS) in
  the backend that receives them; :func:`realname_sdk.fastapi.require_verified` wraps it as a
  FastAPI dependency.
* :mod:`realname_sdk.webhooks` verifies the service's webhook deliveries (Standard Webhooks)
  and reads them as typed events; :func:`realname_sdk.fastapi.webhook_event` wraps it as a
  FastAPI dependency.

A complete sandbox run (a test-mode key, ``realname serve`` on port 8000)::

    from realname_sdk import RealnameClient, TokenVerifier

    with RealnameClient("http://127.0.0.1:8000", "rn_test_...") as client:
        v = client.create_verification(
            external_user_id="user-1",
            real_name="张三",
            id_number="11010519491231002X",
            phone="13800138000",
        )
        v = client.wait_for_status(v.id)  # leaves "pending": "awaiting_code" at L2
        code = client.wait_for_sandbox_code(v.id)  # test mode: read the SMS from the sandbox
        v = client.submit_code(v.id, code)
        assert v.status == "verified"
        token = client.issue_token(v.id)

    verifier = TokenVerifier(
        "http://127.0.0.1:8000/.well-known/jwks.json", audience="cli_..."  # your client id
    )
    claims = verifier.verify(token.access_token)
    print(claims.sub, claims.level, claims.adult)
"""

from realname_sdk._version import __version__
from realname_sdk.client import AsyncRealnameClient, RealnameClient
from realname_sdk.errors import (
    NotVerified,
    RateLimited,
    RealnameError,
    UnexpectedResponse,
    WaitTimeout,
)
from realname_sdk.models import (
    Check,
    Erasure,
    Introspection,
    Masked,
    NextAction,
    SandboxMessage,
    Token,
    Verification,
)
from realname_sdk.tokens import (
    LEVELS,
    Claims,
    InvalidToken,
    InvalidTokenReason,
    KeySetUnavailable,
    TokenVerifier,
    level_at_least,
)

__all__ = [
    "LEVELS",
    "AsyncRealnameClient",
    "Check",
    "Claims",
    "Erasure",
    "Introspection",
    "InvalidToken",
    "InvalidTokenReason",
    "KeySetUnavailable",
    "Masked",
    "NextAction",
    "NotVerified",
    "RateLimited",
    "RealnameClient",
    "RealnameError",
    "SandboxMessage",
    "Token",
    "TokenVerifier",
    "UnexpectedResponse",
    "Verification",
    "WaitTimeout",
    "__version__",
    "level_at_least",
]
