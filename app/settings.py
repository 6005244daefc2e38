"""Service settings: one class, read from ``REALNAME_*`` environment variables and ``.env``."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.crypto import derive_key
from app.settings_rules import (
    decode_key,
    key_problem,
    proxy_problem,
    secret_problem,
    split_list,
    trusts_everyone,
    url_problem,
    versioned_keys_problem,
)

logger = logging.getLogger(__name__)

DEV_KEYS_FILE = ".realname-dev-keys.json"

#: What a `realname serve` process answers (``REALNAME_SERVE_ROLE``, ``serve --role``).
ServeRole = Literal["all", "tokens"]
SERVE_ROLES: tuple[ServeRole, ...] = get_args(ServeRole)


class SettingsError(RuntimeError):
    """Settings that the service refuses to start with (one line per broken rule)."""


def _decode_key(raw: str) -> bytes:
    """Keys are given as URL-safe base64 (what ``realname keys generate`` prints) or hex."""
    try:
        return decode_key(raw)
    except ValueError:
        raise SettingsError("a key setting must be URL-safe base64 (or hex)") from None


#: Each process's PostgreSQL pool (``app.db``): connections are opened as load needs them, up
#: to the pool's size, and then kept; past that, requests wait for one. No overflow: an
#: overflow connection is closed when it is returned to a full pool, so under a steady load a
#: pool with overflow opens and closes connections all the time (30 per 1,000 code checks at 64
#: connections), and each new one costs a PostgreSQL backend, the driver's set-up queries and
#: every statement prepared again. Per process: keep workers x pool under ``max_connections``.
DB_POOL_SIZE = 15
DB_MAX_OVERFLOW = 0
#: Connections of the pool that admission control leaves to requests other than registrations
#: (a registration holds one while it hashes).
DB_CONNECTIONS_BESIDE_REGISTRATIONS = 3
#: By default at most this many registrations in flight per pool connection they may use: one
#: working, one waiting for the connection (a wait longer than the pool timeout would fail).
REGISTRATIONS_PER_CONNECTION = 2


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REALNAME_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        # `REALNAME_X=` (as in .env.example) means "the default", not an empty value.
        env_ignore_empty=True,
    )

    env: Literal["dev", "test", "prod"] = "dev"
    database_url: str = "sqlite:///./realname.db"
    redis_url: str | None = None
    #: Prefix of every Redis key (several deployments may share one Redis).
    redis_prefix: str = Field(default="realname", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    #: Master secret for OTP HMACs, API key hashing and other derived keys (HKDF per purpose).
    secret_key: SecretStr = SecretStr("")
    #: Versioned blind-index keys, ``"1:<base64>,2:<base64>"``; the highest version is current.
    blind_index_keys: SecretStr = SecretStr("")
    dev_keys_file: Path = Path(DEV_KEYS_FILE)
    #: Crypto suite for new blind indexes, code HMACs and sealed personal data: ``intl``
    #: (HMAC-SHA-256, AES-256-GCM) or ``gm`` (HMAC-SM3, SM4-GCM). Values made under the other
    #: suite stay readable and findable; ``realname reindex`` moves them over.
    crypto_suite: Literal["intl", "gm"] = "intl"

    # argon2id profile for the identity hash (OWASP minimum by default) and admin passwords.
    identity_hash_memory_kib: int = Field(default=19 * 1024, ge=8)
    identity_hash_time_cost: int = Field(default=2, ge=1)
    identity_hash_parallelism: int = Field(default=1, ge=1)
    password_hash_memory_kib: int = Field(default=64 * 1024, ge=8)
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_parallelism: int = Field(default=4, ge=1)
    #: Concurrent argon2 hashes; each takes its memory cost. Defaults to the number of cores.
    hash_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    #: Registrations (``POST /v1/verifications``) in flight at once in one process; the next is
    #: refused at once with 503 ``overloaded`` and ``Retry-After``. Unset: 8 x ``hash_workers``
    #: (the wait in front of the hash pool stays near 8 hashes' time), at most 24 (two per
    #: database connection left beside other requests); 0: no limit.
    registration_max_in_flight: int | None = Field(default=None, ge=0)

    # -- hot-path caches (app/hotcache.py) --------------------------------------------------------
    #: How long an API key's lookup is reused (with Redis; revocations through the service reach
    #: every process at once): a key changed straight in the database stops working within
    #: this time (0 = look up every request).
    api_key_cache_seconds: float = Field(default=10, ge=0, le=300)
    #: How long (with Redis) a token's state is reused by introspection; its verified signature
    #: is kept until the token expires (0 = neither). Revocations reach every process at once
    #: through Redis regardless.
    token_cache_seconds: float = Field(default=30, ge=0, le=3600)

    # -- verifiers and senders ----------------------------------------------------------------
    #: Verifier by check type for live clients (test clients always get the sandbox mocks): a
    #: name, or a list of names tried in order when one is unavailable (failover).
    live_verifiers: dict[str, str | list[str]] = Field(
        default_factory=lambda: dict[str, str | list[str]](
            id_registry="http_id_registry", carrier_3e="http_carrier_3e"
        )
    )
    #: Network identity (网号/网证) verifier for live clients: ``http_network_identity`` (the
    #: operator's own gateway to the national service), or unset: not offered to live clients.
    #: Test clients always get the sandbox verifier.
    live_network_identity: Literal["http_network_identity"] | None = None
    network_identity_gateway_url: str | None = None
    network_identity_gateway_token: SecretStr | None = None
    #: Sender for live clients' SMS: console (dev only), http_gateway, tencent_sms, aliyun_sms.
    live_sender: str = "console"
    registry_url: str = "http://127.0.0.1:8090"
    registry_token: SecretStr | None = None
    mock_people_file: Path | None = None
    #: Estimated price (in yuan) of one billable call, by verifier or sender name (each name is
    #: one provider action, e.g. ``tencent_faceid_id2``, ``aliyun_sms``): for cost metrics and
    #: the admin stats. Unpriced names count calls at 0.
    provider_prices: dict[str, float] = Field(default_factory=dict)
    sms_gateway_url: str | None = None
    #: The gateway's signing secret, ``whsec_<base64>`` (Standard Webhooks); other values are
    #: used as raw bytes.
    sms_gateway_secret: SecretStr | None = None
    #: Deprecated, removed in the next release: also send the old ``X-Realname-Timestamp`` and
    #: ``X-Realname-Signature: v1=<hex>`` headers to the SMS gateway.
    sms_gateway_legacy_signature: bool = False
    #: Where operators hear at once of what needs a person (a bulk-access block, an emergency
    #: action): a POST signed per Standard Webhooks with ``operator_webhook_secret``
    #: (``whsec_<base64>``), retried until it is answered 2xx. Unset: audit and metrics only.
    operator_webhook_url: str | None = None
    operator_webhook_secret: SecretStr | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    otp_ttl_seconds: int = Field(default=300, ge=30)
    otp_max_attempts: int = Field(default=5, ge=1)
    verification_ttl_seconds: int = Field(default=1800, ge=60)
    #: Job-level attempts of a registry check that answers "unavailable" before needs_review.
    check_max_attempts: int = Field(default=3, ge=1)
    check_retry_backoff_seconds: float = Field(default=2.0, ge=0)
    sandbox_message_ttl_seconds: int = Field(default=3600, ge=60, le=3600)
    #: Run the outbox worker inside each API process (set false when running `realname worker`).
    run_worker: bool = True
    #: What `realname serve` answers: ``all`` (the whole API) or ``tokens`` (introspection,
    #: revocation, the JWKS and discovery documents, health and metrics only: processes of the
    #: token path's own, which never hash and never run the worker). ``serve --role`` wins.
    serve_role: ServeRole = "all"
    #: Run the automated checks inside the registration's own transaction when every verifier
    #: they need answers in process (the sandbox registry): the answer already carries the
    #: outcome, and nothing is queued for the worker. Checks that need a provider are queued.
    inline_checks: bool = True
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    #: Jobs one worker runs at once (a stalled provider call holds one slot, not the worker).
    worker_concurrency: int = Field(default=8, ge=1, le=256)
    #: How long a claimed job stays with its worker before another may take it over. Longer
    #: than the slowest job (registry retries: 3 x 5 s read timeouts plus back-off).
    worker_lease_seconds: int = Field(default=60, ge=5)
    #: PostgreSQL: give up connecting, waiting for a pooled connection, or on a statement after
    #: these many seconds (a stalled, not refused, database then answers 503 instead of hanging).
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_statement_timeout_seconds: float = Field(default=30.0, gt=0)

    # -- events and webhooks (app/services/events.py, app/services/deliveries.py) ---------------
    #: Host names (comma-separated) whose webhook endpoints may resolve to internal addresses.
    webhook_allowed_hosts: str = ""
    #: Webhook deliveries one worker makes at once (apart from the checks' and SMS slots), and
    #: at most this many to any one endpoint.
    webhook_concurrency: int = Field(default=16, ge=1, le=256)
    webhook_endpoint_concurrency: int = Field(default=2, ge=1, le=64)
    #: A delivery succeeds on a 2xx answer within this many seconds.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=30)
    #: Events are listed at GET /v1/events this long; `realname purge` removes older ones.
    event_retention_days: int = Field(default=30, ge=1)

    # -- tokens --------------------------------------------------------------------------------
    token_ttl_seconds: int = Field(default=900, ge=30, le=24 * 3600)
    #: The URL integrators reach this service at: the tokens' issuer (RFC 9068) and the base of
    #: the URLs in the discovery document (RFC 8414).
    public_url: str = Field(
        default="http://127.0.0.1:8000", pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$"
    )
    #: Overrides the tokens' ``iss`` (default: ``public_url``).
    token_issuer: str | None = None
    #: How long a verified verification holds before the person must verify again.
    verified_validity_days: int = Field(default=365, ge=1)
    #: Time zone in which "adult today" is decided (the person's legal day).
    legal_timezone: str = "Asia/Shanghai"

    # -- admins --------------------------------------------------------------------------------
    admin_session_idle_minutes: int = Field(default=30, ge=1)
    admin_session_absolute_hours: int = Field(default=12, ge=1)
    #: Failed logins allowed per (username, client address) and per address; never per account
    #: alone, so nobody can lock a victim out by guessing their password.
    admin_login_limits: str = "5/15 minutes"
    admin_login_ip_limits: str = "50/hour"
    #: Personal records one admin may open per hour before being stopped (bulk-access guard).
    admin_records_per_hour: int = Field(default=50, ge=1)
    #: Audit events are kept at least this long (Art. 21: six months); shorter is refused.
    audit_retention_days: int = Field(default=180, ge=180)
    #: Versioned keys of the audit chain's HMAC, ``"1:<base64>,2:<base64>"`` (highest current);
    #: unset: one key derived from REALNAME_SECRET_KEY. Never stored in the database.
    audit_keys: SecretStr = SecretStr("")
    #: Versioned Ed25519 seeds (32 bytes) that sign audit checkpoints, same syntax; unset: one
    #: derived from REALNAME_SECRET_KEY. Keep the printed public key apart from the database.
    audit_signing_keys: SecretStr = SecretStr("")
    #: Where the worker writes a signed audit checkpoint every ``audit_checkpoint_seconds``.
    audit_checkpoint_dir: Path | None = None
    #: How many audit chains concurrent writers spread over on PostgreSQL (each transaction
    #: locks one free chain head; a checkpoint signs them all). SQLite keeps to one.
    audit_chains: int = Field(default=8, ge=1, le=64)
    audit_checkpoint_seconds: float = Field(default=3600, ge=10)
    #: ``Retry-After`` of a request refused while issuance is suspended.
    issuance_retry_after_seconds: int = Field(default=300, ge=1)
    #: `realname purge` ends unfinished verifications older than this.
    purge_unfinished_after_days: int = Field(default=7, ge=1)

    # -- rate limits (limits library syntax; shared through Redis when configured) -------------
    #: SMS per (client, phone); per-day items count calendar days in ``legal_timezone``.
    sms_phone_limits: str = "1/minute;5/hour;10/day"
    #: SMS per phone per calendar day across all clients (protects the phone's owner).
    sms_phone_platform_per_day: int = Field(default=10, ge=1)
    #: Failed API-key or admin-session authentications allowed per client address.
    auth_failure_limits: str = "30/minute;300/hour"
    #: SMS sends per person (identity), across resends, phones and verifications.
    sms_identity_limits: str = "10/hour;20/day"
    failed_codes_per_identity: int = Field(default=100, ge=1)
    client_requests_per_minute: int = Field(default=600, ge=1)

    #: When set, /metrics requires `Authorization: Bearer <token>` (required in prod).
    metrics_token: SecretStr | None = None

    # -- production (production_problems below) --------------------------------------------------
    #: Addresses and networks of the proxies whose X-Forwarded-For / -Proto are believed
    #: (comma-separated); empty = none: the connection's own address counts.
    trusted_proxies: str = ""
    #: Origins (``http://host:port``) that may be plain http or private in prod: services the
    #: operator runs inside their own network (a gateway, a registry).
    internal_url_allowlist: str = ""
    #: Let prod run on SQLite (one process on one machine only; a trial, not production).
    allow_sqlite_in_prod: bool = False
    #: How long a rotated API key keeps working beside its successor, by default.
    api_key_rotation_overlap_hours: int = Field(default=24, ge=0, le=24 * 30)
    max_body_bytes: int = Field(default=16 * 1024, ge=1024)
    idempotency_ttl_seconds: int = 24 * 3600
    default_level: Literal["L1", "L2", "L3"] = "L2"
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres")):
            raise ValueError("only SQLite and PostgreSQL URLs are supported")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        problem = proxy_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_in_prod(self) -> Settings:
        if self.env == "prod":
            problems = production_problems(self)
            if problems:
                raise SettingsError("\n".join(problems))
            if self.is_sqlite:
                logger.warning("REALNAME_ENV=prod with SQLite: use PostgreSQL for production")
        return self

    @property
    def forwarded_allow_ips(self) -> list[str]:
        """What uvicorn is told to trust for forwarded headers (empty: nobody)."""
        return [item.strip() for item in self.trusted_proxies.split(",") if item.strip()]

    # -- secrets ------------------------------------------------------------------------------
    def _secret_bytes(self) -> bytes:
        return _decode_key(self.secret_key.get_secret_value())

    @cached_property
    def _dev_keys(self) -> dict[str, str]:
        """Generate (once) and read back local development keys. Never used in prod."""
        path = self.dev_keys_file
        if path.exists():
            data: dict[str, str] = json.loads(path.read_text())
            return data
        logger.warning(
            "no secrets configured: generated development keys into %s; "
            "set REALNAME_SECRET_KEY and REALNAME_BLIND_INDEX_KEYS for anything real",
            path.name,
        )
        data = {
            "secret_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "blind_index_keys": "1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        return data

    @cached_property
    def master_key(self) -> bytes:
        if self.secret_key.get_secret_value():
            return self._secret_bytes()
        return _decode_key(self._dev_keys["secret_key"])

    @cached_property
    def blind_keys(self) -> dict[int, bytes]:
        raw = self.blind_index_keys.get_secret_value() or self._dev_keys["blind_index_keys"]
        keys: dict[int, bytes] = {}
        for part in raw.split(","):
            version, _, key = part.strip().partition(":")
            if not version.isascii() or not version.isdigit() or not key:
                raise SettingsError(
                    "REALNAME_BLIND_INDEX_KEYS must look like '1:<base64>,2:<base64>'"
                )
            keys[int(version)] = _decode_key(key)
        if any(len(k) < 32 for k in keys.values()):
            raise SettingsError("each blind-index key must hold at least 32 bytes")
        return keys

    def _versioned(self, raw: str, name: str, purpose: str) -> dict[int, bytes]:
        if not raw:
            return {1: derive_key(self.master_key, purpose)}
        keys: dict[int, bytes] = {}
        for part in raw.split(","):
            version, _, key = part.strip().partition(":")
            if not version.isascii() or not version.isdigit() or not key:
                raise SettingsError(f"REALNAME_{name} must look like '1:<base64>,2:<base64>'")
            keys[int(version)] = _decode_key(key)
        if any(len(k) != 32 for k in keys.values()):
            raise SettingsError(f"each key in REALNAME_{name} must hold exactly 32 bytes")
        return keys

    @cached_property
    def audit_chain_keys(self) -> dict[int, bytes]:
        """HMAC keys of the audit chain by version (the highest writes)."""
        return self._versioned(self.audit_keys.get_secret_value(), "AUDIT_KEYS", "audit-chain")

    @cached_property
    def audit_checkpoint_seeds(self) -> dict[int, bytes]:
        """Ed25519 seeds that sign audit checkpoints by version (the highest signs)."""
        return self._versioned(
            self.audit_signing_keys.get_secret_value(), "AUDIT_SIGNING_KEYS", "audit-checkpoint"
        )

    @property
    def webhook_hosts(self) -> frozenset[str]:
        return frozenset(
            h.strip().lower().rstrip(".")
            for h in self.webhook_allowed_hosts.split(",")
            if h.strip()
        )

    @property
    def blind_key_version(self) -> int:
        return max(self.blind_keys)

    @property
    def issuer(self) -> str:
        """The ``iss`` of service tokens and the ``issuer`` of the discovery document."""
        return self.token_issuer or self.public_url.rstrip("/")

    @property
    def registration_in_flight_limit(self) -> int:
        """``registration_max_in_flight``; unset, 8 per hash worker, and at most two per
        connection of the database pool left beside the other requests (a registration holds a
        connection while it hashes, and one that waits for a connection too long fails): 24.
        0: no limit."""
        if self.registration_max_in_flight is not None:
            return self.registration_max_in_flight
        connections = DB_POOL_SIZE + DB_MAX_OVERFLOW - DB_CONNECTIONS_BESIDE_REGISTRATIONS
        return min(8 * self.hash_workers, REGISTRATIONS_PER_CONNECTION * connections)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def async_database_url(self) -> str:
        """The URL with the async driver the service uses (asyncpg / aiosqlite)."""
        url = self.database_url
        for prefix in (
            "postgresql+asyncpg://",
            "postgresql+psycopg://",
            "postgresql://",
            "postgres://",
        ):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        if url.startswith("sqlite+aiosqlite://"):
            return url
        if url.startswith("sqlite://"):
            return "sqlite+aiosqlite://" + url[len("sqlite://") :]
        return url


def get_settings() -> Settings:
    return Settings()


def production_problems(settings: Settings) -> list[str]:
    """Every rule ``settings`` break for ``REALNAME_ENV=prod``, one line each."""
    problems: list[str] = []

    def add(problem: str | None) -> None:
        if problem is not None:
            problems.append(problem)

    add(key_problem("REALNAME_SECRET_KEY", settings.secret_key.get_secret_value()))
    add(versioned_keys_problem("REALNAME_BLIND_INDEX_KEYS", settings.blind_index_keys))
    # Optional (derived from the secret key when unset), but never weak when set.
    for variable, value in (
        ("REALNAME_AUDIT_KEYS", settings.audit_keys),
        ("REALNAME_AUDIT_SIGNING_KEYS", settings.audit_signing_keys),
    ):
        if value.get_secret_value():
            add(versioned_keys_problem(variable, value))

    allow = split_list(settings.internal_url_allowlist)
    for entry in allow:
        add(
            None
            if urlsplit(entry).scheme in ("http", "https") and urlsplit(entry).hostname
            else "REALNAME_INTERNAL_URL_ALLOWLIST must list origins such as http://host:port"
        )

    if settings.live_sender == "console":
        problems.append("REALNAME_LIVE_SENDER=console is for development only")
    if settings.live_sender == "http_gateway":
        if not settings.sms_gateway_url:
            problems.append("REALNAME_SMS_GATEWAY_URL is required by REALNAME_LIVE_SENDER")
        else:
            add(url_problem("REALNAME_SMS_GATEWAY_URL", settings.sms_gateway_url, allow))
        secret = settings.sms_gateway_secret
        if secret is None:
            problems.append("REALNAME_SMS_GATEWAY_SECRET is required by REALNAME_LIVE_SENDER")
        else:
            add(secret_problem("REALNAME_SMS_GATEWAY_SECRET", secret.get_secret_value()))

    live_verifiers = {
        name
        for chain in settings.live_verifiers.values()
        for name in ([chain] if isinstance(chain, str) else chain)
    }
    if any(name.startswith("http_") for name in live_verifiers):
        if "registry_url" not in settings.model_fields_set:
            problems.append(
                "REALNAME_REGISTRY_URL must be set explicitly for the http_* verifiers "
                "(the default is the mock registry, which matches everyone)"
            )
        else:
            add(url_problem("REALNAME_REGISTRY_URL", settings.registry_url, allow))
    if settings.registry_token is not None:
        add(secret_problem("REALNAME_REGISTRY_TOKEN", settings.registry_token.get_secret_value()))
    if settings.operator_webhook_url:
        add(url_problem("REALNAME_OPERATOR_WEBHOOK_URL", settings.operator_webhook_url, allow))
        if settings.operator_webhook_secret is None:
            problems.append(
                "REALNAME_OPERATOR_WEBHOOK_SECRET is required by REALNAME_OPERATOR_WEBHOOK_URL"
            )
    if settings.operator_webhook_secret is not None:
        add(
            secret_problem(
                "REALNAME_OPERATOR_WEBHOOK_SECRET",
                settings.operator_webhook_secret.get_secret_value(),
            )
        )
    if settings.live_network_identity and settings.network_identity_gateway_url:
        add(
            url_problem(
                "REALNAME_NETWORK_IDENTITY_GATEWAY_URL",
                settings.network_identity_gateway_url,
                allow,
            )
        )
    if settings.network_identity_gateway_token is not None:
        add(
            secret_problem(
                "REALNAME_NETWORK_IDENTITY_GATEWAY_TOKEN",
                settings.network_identity_gateway_token.get_secret_value(),
            )
        )

    if settings.is_sqlite and not settings.allow_sqlite_in_prod:
        problems.append(
            "REALNAME_DATABASE_URL must be PostgreSQL in prod "
            "(SQLite only with REALNAME_ALLOW_SQLITE_IN_PROD=true)"
        )
    if settings.metrics_token is None:
        problems.append("REALNAME_METRICS_TOKEN is required in prod (/metrics needs a token)")
    else:
        add(secret_problem("REALNAME_METRICS_TOKEN", settings.metrics_token.get_secret_value()))

    if proxy_problem(settings.trusted_proxies) is None and trusts_everyone(
        settings.trusted_proxies
    ):
        problems.append(
            "REALNAME_TRUSTED_PROXIES must list your proxies' addresses, not everyone "
            "(*, 0.0.0.0/0 or ::/0)"
        )
    return problems
