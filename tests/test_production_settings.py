"""Prod mode refuses unsafe settings at start-up, one line naming the variable and the rule;
`realname keys generate` prints settings that pass; forwarded headers are believed only from
`REALNAME_TRUSTED_PROXIES`."""

from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.keygen import new_key, new_secret
from app.runtime import Runtime
from app.settings import Settings, SettingsError
from app.settings_rules import DOCUMENTED_EXAMPLES
from tests.support import REPO_ROOT, launch, run_cli, serve

#: The cheapest argon2 profile for admin passwords in child processes (behaviour, not cost).
CHEAP_PASSWORDS = {
    "REALNAME_PASSWORD_HASH_MEMORY_KIB": "8",
    "REALNAME_PASSWORD_HASH_TIME_COST": "1",
    "REALNAME_PASSWORD_HASH_PARALLELISM": "1",
}


def prod(**changes: Any) -> dict[str, Any]:
    """Settings a production deployment may start with, changed by ``changes``
    (a value of None removes the setting)."""
    values: dict[str, Any] = {
        "env": "prod",
        "database_url": "postgresql://realname@db.example.com:5432/realname",
        "secret_key": new_key(),
        "blind_index_keys": "1:" + new_key(),
        "live_sender": "http_gateway",
        "sms_gateway_url": "https://sms.example.com/send",
        "sms_gateway_secret": new_secret(),
        "registry_url": "https://registry.example.com",
        "metrics_token": new_secret(),
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def refusal(**changes: Any) -> str:
    with pytest.raises(SettingsError) as caught:
        Settings(_env_file=None, **prod(**changes))
    return str(caught.value)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def test_safe_production_settings_start() -> None:
    """Generated keys, https gateways, PostgreSQL and a metrics token are accepted."""
    settings = Settings(_env_file=None, **prod())

    assert settings.env == "prod"


UNSAFE = [
    ("secret_key", b64(bytes(32)), "REALNAME_SECRET_KEY must be random"),
    ("secret_key", b64(bytes(range(32))), "REALNAME_SECRET_KEY must be random"),
    ("secret_key", b64(secrets.token_bytes(16)), "REALNAME_SECRET_KEY must hold at least 32"),
    ("secret_key", "changeme", "REALNAME_SECRET_KEY must be a real secret"),
    ("secret_key", "not base64 !", "REALNAME_SECRET_KEY must be URL-safe base64"),
    ("blind_index_keys", "1:" + b64(bytes(32)), "REALNAME_BLIND_INDEX_KEYS (version 1) must be"),
    ("blind_index_keys", "one:abc", "REALNAME_BLIND_INDEX_KEYS must look like"),
    ("blind_index_keys", "", "REALNAME_BLIND_INDEX_KEYS must be a real secret"),
    ("audit_keys", "1:" + b64(bytes(32)), "REALNAME_AUDIT_KEYS (version 1) must be random"),
    (
        "audit_signing_keys",
        "1:" + b64(secrets.token_bytes(16)),
        "REALNAME_AUDIT_SIGNING_KEYS (version 1) must hold",
    ),
    ("sms_gateway_secret", "x", "REALNAME_SMS_GATEWAY_SECRET must be at least 32"),
    ("sms_gateway_secret", "a" * 40, "REALNAME_SMS_GATEWAY_SECRET must be random"),
    ("sms_gateway_secret", None, "REALNAME_SMS_GATEWAY_SECRET is required"),
    ("sms_gateway_url", "http://169.254.169.254/latest", "REALNAME_SMS_GATEWAY_URL must use https"),
    ("sms_gateway_url", "https://169.254.169.254/latest", "REALNAME_SMS_GATEWAY_URL must not"),
    ("sms_gateway_url", "https://10.1.2.3/send", "REALNAME_SMS_GATEWAY_URL must not point"),
    ("sms_gateway_url", "https://[::1]:8443/send", "REALNAME_SMS_GATEWAY_URL must not point"),
    ("sms_gateway_url", "https://localhost/send", "REALNAME_SMS_GATEWAY_URL must not point"),
    ("sms_gateway_url", None, "REALNAME_SMS_GATEWAY_URL is required"),
    ("registry_url", None, "REALNAME_REGISTRY_URL must be set explicitly"),
    ("registry_url", "http://127.0.0.1:8090", "REALNAME_REGISTRY_URL must use https"),
    ("registry_url", "https://192.168.0.10", "REALNAME_REGISTRY_URL must not point"),
    ("registry_url", "https://127.1/", "REALNAME_REGISTRY_URL must not point"),
    ("registry_url", "https://2130706433/", "REALNAME_REGISTRY_URL must not point"),
    ("registry_url", "https://metadata.google.internal/", "REALNAME_REGISTRY_URL must not"),
    ("database_url", "sqlite:///./realname.db", "REALNAME_DATABASE_URL must be PostgreSQL"),
    ("metrics_token", None, "REALNAME_METRICS_TOKEN is required"),
    ("metrics_token", "short", "REALNAME_METRICS_TOKEN must be at least 32"),
    ("trusted_proxies", "*", "REALNAME_TRUSTED_PROXIES must list your proxies"),
    ("trusted_proxies", "10.0.0.0/8,0.0.0.0/0", "REALNAME_TRUSTED_PROXIES must list your"),
    ("live_sender", "console", "REALNAME_LIVE_SENDER=console is for development only"),
    ("internal_url_allowlist", "mock-registry", "REALNAME_INTERNAL_URL_ALLOWLIST must list"),
    ("operator_webhook_url", "https://alerts.example.com/x", "REALNAME_OPERATOR_WEBHOOK_SECRET is"),
    ("operator_webhook_secret", "x", "REALNAME_OPERATOR_WEBHOOK_SECRET must be at least 32"),
]


@pytest.mark.parametrize(("field", "value", "message"), UNSAFE)
def test_prod_refuses_each_unsafe_setting_naming_variable_and_rule(
    field: str, value: str | None, message: str
) -> None:
    """Each unsafe setting alone is refused with a line naming its variable and rule."""
    refused = refusal(**{field: value})

    assert message in refused
    assert len(refused.splitlines()) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"network_identity_gateway_url": "http://10.0.0.5/ni"},
            "REALNAME_NETWORK_IDENTITY_GATEWAY_URL must use https",
        ),
        (
            {"network_identity_gateway_url": "https://127.0.0.1/ni"},
            "REALNAME_NETWORK_IDENTITY_GATEWAY_URL must not point",
        ),
        (
            {
                "network_identity_gateway_url": "https://ni.example.com",
                "network_identity_gateway_token": "x",
            },
            "REALNAME_NETWORK_IDENTITY_GATEWAY_TOKEN must be at least 32",
        ),
    ],
)
def test_prod_checks_the_network_identity_gateway_like_the_others(
    changes: dict[str, str], message: str
) -> None:
    """The operator's network identity gateway gets the same URL and secret rules."""
    refused = refusal(live_network_identity="http_network_identity", **changes)

    assert message in refused


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://alerts.example.com/x", "REALNAME_OPERATOR_WEBHOOK_URL must use https"),
        ("https://10.0.0.9/x", "REALNAME_OPERATOR_WEBHOOK_URL must not point"),
    ],
)
def test_prod_checks_the_operator_webhook_like_the_gateways(url: str, message: str) -> None:
    """The operators' alert hook gets the same URL rules as the other outbound calls."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()

    assert message in refusal(operator_webhook_url=url, operator_webhook_secret=secret)


@pytest.mark.parametrize("example", sorted(DOCUMENTED_EXAMPLES))
def test_prod_refuses_the_documented_example_values(example: str) -> None:
    """A value printed in the documentation is refused wherever a secret goes."""
    field = "metrics_token" if "-" in example else "secret_key"

    assert "example from the documentation" in refusal(**{field: example})


def test_the_documented_examples_are_the_ones_in_readme_and_env_example() -> None:
    """The README and .env.example show only example values that prod refuses."""
    docs = (REPO_ROOT / "README.md").read_text() + (REPO_ROOT / ".env.example").read_text()
    shown = set(re.findall(r"REALNAME_[A-Z_]+=(?:1:)?([A-Za-z0-9_-]{30,})", docs))

    assert shown
    assert shown <= DOCUMENTED_EXAMPLES


def test_refusals_are_listed_together_one_line_each() -> None:
    """Several unsafe settings are all reported at once, one line each."""
    refused = refusal(sms_gateway_secret="x", metrics_token=None, trusted_proxies="*")

    assert len(refused.splitlines()) == 3


def test_allowlisted_internal_origins_may_be_plain_http() -> None:
    """Origins listed in REALNAME_INTERNAL_URL_ALLOWLIST may be http and private."""
    settings = Settings(
        _env_file=None,
        **prod(
            registry_url="http://mock-registry:8090",
            sms_gateway_url="http://sink:8025/sms",
            internal_url_allowlist="http://mock-registry:8090, http://sink:8025",
        ),
    )

    assert settings.registry_url == "http://mock-registry:8090"


def test_sqlite_in_prod_only_with_the_explicit_override() -> None:
    """REALNAME_ALLOW_SQLITE_IN_PROD=true lets a single-host trial run on SQLite."""
    settings = Settings(
        _env_file=None,
        **prod(database_url="sqlite:///./trial.db", allow_sqlite_in_prod=True),
    )

    assert settings.is_sqlite


def test_trusted_proxies_must_be_addresses_in_every_mode() -> None:
    """A proxy entry that is not an address or network is refused even in dev."""
    with pytest.raises(ValueError, match="REALNAME_TRUSTED_PROXIES must list IP addresses"):
        Settings(_env_file=None, trusted_proxies="proxy.example.com")


def test_keys_generate_prints_settings_that_prod_accepts(settings: Settings) -> None:
    """`realname keys generate` works unconfigured and prints keys prod accepts, new each run."""
    first = run_cli(settings, "keys", "generate", REALNAME_ENV="prod", REALNAME_SECRET_KEY="")
    second = run_cli(settings, "keys", "generate")
    values = dict(
        line.split("=", 1) for line in first.stdout.splitlines() if not line.startswith("#")
    )

    assert first.returncode == 0, first.stderr
    assert set(values) >= {
        "REALNAME_SECRET_KEY",
        "REALNAME_BLIND_INDEX_KEYS",
        "REALNAME_METRICS_TOKEN",
        "REALNAME_SMS_GATEWAY_SECRET",
    }
    assert values["REALNAME_SECRET_KEY"] not in second.stdout
    Settings(
        _env_file=None,
        **prod(
            secret_key=values["REALNAME_SECRET_KEY"],
            blind_index_keys=values["REALNAME_BLIND_INDEX_KEYS"],
            metrics_token=values["REALNAME_METRICS_TOKEN"],
            sms_gateway_secret=values["REALNAME_SMS_GATEWAY_SECRET"],
        ),
    )


def test_keys_generate_numbers_a_rotated_blind_index_key(settings: Settings) -> None:
    """--blind-index-version N prints the new key under version N, to append to the list."""
    out = run_cli(settings, "keys", "generate", "--blind-index-version", "2")

    assert re.search(r"^REALNAME_BLIND_INDEX_KEYS=2:[A-Za-z0-9_-]{43}$", out.stdout, re.M)


def test_serve_in_prod_with_an_unsafe_setting_exits_before_listening(
    settings: Settings, tmp_path: Path
) -> None:
    """`realname serve` refuses to start on a gateway secret 'x', naming the variable."""
    env = {f"REALNAME_{k.upper()}": str(v) for k, v in prod(sms_gateway_secret="x").items()}
    service = launch(settings, log_path=tmp_path / "serve.log", **env)

    code = service.wait_exit(within=30)

    assert code == 2
    assert "realname: REALNAME_SMS_GATEWAY_SECRET must be at least 32 characters" in service.log()
    assert env["REALNAME_SECRET_KEY"] not in service.log()


@pytest.mark.e2e
async def test_forwarded_for_from_an_untrusted_caller_cannot_dodge_sign_in_throttling(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """Without REALNAME_TRUSTED_PROXIES a local caller's X-Forwarded-For is ignored."""
    created = run_cli(
        settings, "admins", "create", "--username", "proxy-test", "--role", "admin",
        stdin="a long admin password\n", **CHEAP_PASSWORDS,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    with serve(settings, log_path=tmp_path / "serve.log", **CHEAP_PASSWORDS) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            answers = [
                await http.post(
                    "/v1/admin/sessions",
                    json={"username": "proxy-test", "password": "wrong password"},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                )
                for n in range(6)
            ]

    assert [a.status_code for a in answers[:5]] == [401] * 5
    assert answers[5].status_code == 429


@pytest.mark.e2e
async def test_forwarded_for_from_a_trusted_proxy_is_believed(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    """With the caller listed in REALNAME_TRUSTED_PROXIES, each forwarded address counts apart."""
    created = run_cli(
        settings, "admins", "create", "--username", "proxy-ok", "--role", "admin",
        stdin="a long admin password\n", **CHEAP_PASSWORDS,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    with serve(
        settings,
        log_path=tmp_path / "serve.log",
        REALNAME_TRUSTED_PROXIES="127.0.0.1",
        **CHEAP_PASSWORDS,
    ) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            answers = [
                await http.post(
                    "/v1/admin/sessions",
                    json={"username": "proxy-ok", "password": "wrong password"},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                )
                for n in range(6)
            ]

    assert [a.status_code for a in answers] == [401] * 6


def test_env_example_lists_every_setting_with_a_value_dev_accepts() -> None:
    """.env.example names every setting, with a comment, and loads as a dev configuration."""
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    listed = {line.split("=", 1)[0] for line in lines if line.startswith("REALNAME_")}
    every = {f"REALNAME_{name.upper()}" for name in Settings.model_fields}

    loaded = Settings(_env_file=REPO_ROOT / ".env.example")

    assert every <= listed, every - listed
    assert listed <= every, listed - every
    assert loaded.env == "dev"


@pytest.mark.parametrize("env", ["prod", "test"])
async def test_admin_ui_marks_cookies_secure_and_sends_hsts_in_prod(
    runtime: Runtime, env: str
) -> None:
    """In prod every admin page sends HSTS and its cookies are Secure, even over plain http
    (TLS ends at the proxy); elsewhere plain http on localhost keeps working."""
    from dataclasses import replace

    from app.main import create_app

    shaped = replace(runtime, settings=runtime.settings.model_copy(update={"env": env}))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime=shaped)), base_url="http://testserver"
    ) as http:
        page = await http.get("/admin/sign-in")

    cookie = page.headers["set-cookie"]
    assert page.status_code == 200
    assert ("Strict-Transport-Security" in page.headers) is (env == "prod")
    assert ("Secure" in cookie) is (env == "prod")
