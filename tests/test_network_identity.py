"""Verification by national network identity (网号/网证): intake without identity data, the
sandbox's magic credentials, levels by mode, the adult claim from the age band, recognition of
the same person by the blind index of the app-scoped identifier, the operator's HTTP gateway
(fail-closed), and erasure."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from app.providers.breaker import CircuitBreaker
from app.runtime import Runtime
from app.verifiers.base import CheckOutcome
from app.verifiers.network_identity import (
    HttpNetworkIdentityVerifier,
    NetworkCredential,
    NetworkIdentityResult,
    run_network_check,
)
from app.worker import Worker
from tests.conftest import auth
from tests.test_admin_api import admin_token, bearer
from tests.test_tokens import token_for

REQUEST_ID = "D6163397-15C5-419C-9ACC-B7C83E0B4C10"


def network(credential: str, **changes: Any) -> dict[str, Any]:
    return {
        "id_type": "cn_network_identity",
        "credential": credential,
        "mode": "credential",
        "external_user_id": "user-1",
        "consent": {"policy_version": "2026-01"},
        **changes,
    }


async def run(
    http: httpx.AsyncClient, key: str, worker: Worker, body: dict[str, Any]
) -> dict[str, Any]:
    r = await http.post("/v1/verifications", json=body, headers=auth(key))
    assert r.status_code == 201, r.text
    await worker.run_until_idle(max_wait=3)
    return dict((await http.get(f"/v1/verifications/{r.json()['id']}", headers=auth(key))).json())


@pytest.fixture
async def key(make_client: Any) -> str:
    _, api_key = await make_client("test", level="L1")
    return str(api_key)


async def adult_claim(http: httpx.AsyncClient, key: str, vid: str) -> bool:
    token = await token_for(http, key, vid)
    return bool(jwt.decode(token, options={"verify_signature": False})["adult"])


async def test_test_mode_network_identity_is_verified_with_an_adult_token(
    http: httpx.AsyncClient, key: str, worker: Worker
) -> None:
    """A test_adult credential reaches verified, one network_identity check passed, no masked
    identity fields, and the token's adult claim is true."""
    v = await run(http, key, worker, network("test_adult_alice"))

    assert v["status"] == "verified"
    assert v["checks"] == [{"type": "network_identity", "status": "passed", "reason": None}]
    assert v["masked"] == {"real_name": None, "id_number": None, "phone": None}
    assert await adult_claim(http, key, v["id"]) is True


@pytest.mark.parametrize(
    ("credential", "adult"),
    [("test_minor_1", False), ("test_child_1", False), ("test_noage_1", False)],
)
async def test_age_band_sets_the_adult_claim(
    http: httpx.AsyncClient, key: str, worker: Worker, credential: str, adult: bool
) -> None:
    """A minor, a child or an undisclosed age band is verified with adult=false."""
    v = await run(http, key, worker, network(credential))

    assert v["status"] == "verified"
    assert await adult_claim(http, key, v["id"]) is adult


@pytest.mark.parametrize(
    ("credential", "status", "reason"),
    [
        ("test_fail", "rejected", "network_identity_failed"),
        ("test_expired", "rejected", "credential_expired"),
        ("something_else", "rejected", "credential_invalid"),
        ("test_unavailable", "needs_review", "network_identity_unavailable"),
    ],
)
async def test_magic_credentials_give_their_documented_outcome(
    http: httpx.AsyncClient, key: str, worker: Worker, credential: str, status: str, reason: str
) -> None:
    """Each sandbox magic credential ends in its documented status and reason."""
    v = await run(http, key, worker, network(credential))

    assert (v["status"], v["status_reason"]) == (status, reason)


@pytest.mark.parametrize("field", ["real_name", "id_number", "phone"])
async def test_identity_fields_are_not_accepted(
    http: httpx.AsyncClient, key: str, field: str
) -> None:
    """Minimal provision: a network identity request carrying a name, ID number or phone is
    refused with unknown_field at that field."""
    r = await http.post(
        "/v1/verifications", json=network("test_adult", **{field: "x"}), headers=auth(key)
    )

    assert r.status_code == 422
    assert r.json()["errors"][0] == {
        "pointer": f"/{field}",
        "code": "unknown_field",
        "detail": "Extra inputs are not permitted",
    }


async def test_an_unknown_id_type_is_unsupported(http: httpx.AsyncClient, key: str) -> None:
    """An id_type that is neither kind answers 422 unsupported_id_type at /id_type."""
    r = await http.post(
        "/v1/verifications", json=network("test_adult", id_type="passport"), headers=auth(key)
    )

    assert r.status_code == 422
    assert (r.json()["code"], r.json()["errors"][0]["pointer"]) == (
        "unsupported_id_type",
        "/id_type",
    )


@pytest.mark.parametrize(
    ("level", "mode", "status"),
    [
        ("L2", "credential", 422),
        ("L2", "credential_password", 201),
        ("L3", "credential_password", 422),
        ("L3", "credential_face", 201),
    ],
)
async def test_levels_need_a_strong_enough_mode(
    http: httpx.AsyncClient, key: str, level: str, mode: str, status: int
) -> None:
    """L2 needs a password or face mode, L3 a face mode; weaker ones are refused at intake."""
    r = await http.post(
        "/v1/verifications",
        json=network("test_adult", level=level, mode=mode),
        headers=auth(key),
    )

    assert r.status_code == status, r.text
    if status == 422:
        assert r.json()["code"] == "network_identity_mode_too_weak"


async def test_the_same_person_is_recognised_by_the_app_scoped_identifier(
    http: httpx.AsyncClient, key: str, worker: Worker, runtime: Runtime
) -> None:
    """The same network identity cannot become a second user of the client; the credential and
    the app-scoped identifier are stored nowhere, only one identity row exists."""
    first = await run(http, key, worker, network("test_adult_carol"))
    second = await run(http, key, worker, network("test_adult_carol", external_user_id="user-2"))

    assert first["status"] == "verified"
    assert (second["status"], second["status_reason"]) == ("rejected", "identity_in_use")
    app_id = "sbx_" + hashlib.sha256(b"test_adult_carol").hexdigest()[:32]
    async with runtime.engine.connect() as conn:
        identities = (await conn.execute(text("SELECT id_type FROM identities"))).all()
        dump = ""
        for table in ("identities", "verifications", "checks", "audit_events", "outbox_jobs"):
            dump += str((await conn.execute(text(f"SELECT * FROM {table}"))).all())  # noqa: S608
    assert identities == [("cn_network_identity",)]
    assert "test_adult_carol" not in dump
    assert app_id not in dump


async def test_erasure_removes_the_person(
    http: httpx.AsyncClient, key: str, worker: Worker, runtime: Runtime
) -> None:
    """Erasing a network identity verification leaves a tombstone and no identity row."""
    v = await run(http, key, worker, network("test_adult_dave"))

    r = await http.delete(f"/v1/verifications/{v['id']}", headers=auth(key))

    assert r.json()["status"] == "erased"
    async with runtime.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM identities"))).scalar() == 0


async def test_a_review_cannot_approve_an_unanswered_network_identity(
    http: httpx.AsyncClient, key: str, worker: Worker, runtime: Runtime
) -> None:
    """needs_review after the network service stayed down: nobody is known, approval is 409."""
    v = await run(http, key, worker, network("test_unavailable"))
    token = await admin_token(http, runtime, "reviewer")

    r = await http.post(
        f"/v1/admin/verifications/{v['id']}/approve",
        json={"reason_code": "documents_checked"},
        headers=bearer(token),
    )

    assert r.status_code == 409
    assert r.json()["code"] == "invalid_transition"


async def test_live_clients_need_a_configured_gateway(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """Without REALNAME_LIVE_NETWORK_IDENTITY a live key is told network identity is not
    enabled, before anything is stored."""
    _, live = await make_client("live", level="L1")

    r = await http.post("/v1/verifications", json=network("anything"), headers=auth(live))

    assert r.status_code == 422
    assert r.json()["code"] == "network_identity_not_enabled"


# --- the operator's HTTP gateway ---------------------------------------------------------------


Reply = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
async def gateway() -> AsyncIterator[Callable[..., tuple[HttpNetworkIdentityVerifier, list[Any]]]]:
    """Builds the HTTP adapter over a gateway that plays ``replies`` in turn (the last
    repeats); returns it with the list of requests seen."""
    clients: list[httpx.AsyncClient] = []

    def build(*replies: httpx.Response, **options: Any) -> tuple[Any, list[Any]]:
        seen: list[httpx.Request] = []
        queue = list(replies)

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return queue.pop(0) if len(queue) > 1 else queue[0]

        clients.append(httpx.AsyncClient(transport=httpx.MockTransport(handler)))

        async def no_sleep(_: float) -> None:
            return None

        verifier = HttpNetworkIdentityVerifier(
            clients[-1], "https://gw.test", "gw-token", sleep=no_sleep, **options
        )
        return verifier, seen

    yield build
    for client in clients:
        await client.aclose()


CREDENTIAL = NetworkCredential("opaque-result-token", "credential_face")


def gateway_answer(**body: Any) -> httpx.Response:
    return httpx.Response(200, json={"request_id": REQUEST_ID, **body})


async def test_gateway_pass_carries_identifier_mode_and_age_band(gateway: Any) -> None:
    """A pass answer gives the app-scoped identifier, the mode and the age band; the credential
    goes in the JSON body with the bearer token, never in the URL."""
    verifier, seen = gateway(
        gateway_answer(result="pass", app_id="app-7", mode="credential_face", age_band="adult")
    )

    result = await run_network_check(verifier, CREDENTIAL, attempt_key="k-1")

    assert (result.outcome, result.app_id, result.mode, result.age_band) == (
        CheckOutcome.PASSED,
        "app-7",
        "credential_face",
        "adult",
    )
    request = seen[0]
    assert str(request.url) == "https://gw.test/v1/network-identity/verify"
    assert request.headers["authorization"] == "Bearer gw-token"
    assert b"opaque-result-token" in request.content


@pytest.mark.parametrize(
    ("reply", "outcome", "reason"),
    [
        (
            gateway_answer(result="fail", reason="credential_expired"),
            "failed",
            "credential_expired",
        ),
        (gateway_answer(result="fail"), "failed", "network_identity_failed"),
        (
            gateway_answer(result="pass", mode="credential"),
            "unavailable",
            "network_identity_bad_response",
        ),
        (gateway_answer(result="maybe"), "unavailable", "network_identity_bad_response"),
        (httpx.Response(200, text="<html>"), "unavailable", "network_identity_bad_response"),
        (httpx.Response(401), "unavailable", "network_identity_bad_response"),
        (httpx.Response(503), "unavailable", "network_identity_unavailable"),
    ],
)
async def test_gateway_answers_map_and_fail_closed(
    gateway: Any, reply: httpx.Response, outcome: str, reason: str
) -> None:
    """Definite answers map; anything malformed or missing is unavailable, never passed."""
    verifier, _ = gateway(reply)

    result = await run_network_check(verifier, CREDENTIAL, attempt_key="k-1")

    assert (result.outcome.value, result.reason) == (outcome, reason)


async def test_gateway_down_is_retried_then_the_breaker_opens(gateway: Any) -> None:
    """A 503 is retried up to max_attempts; failures open the breaker, which then stops calls."""
    verifier, seen = gateway(
        httpx.Response(503), max_attempts=2, breaker=CircuitBreaker(failure_threshold=1)
    )

    first = await run_network_check(verifier, CREDENTIAL, attempt_key="k-1")
    second = await run_network_check(verifier, CREDENTIAL, attempt_key="k-2")

    assert (first.reason, second.reason) == ("network_identity_unavailable", "circuit_open")
    assert len(seen) == 2


async def test_a_verifier_that_raises_is_unavailable() -> None:
    """run_network_check fails closed on a plug-in's exception."""

    class Broken:
        name = "broken"
        check_type = "network_identity"
        sandbox = False

        async def verify(
            self, credential: NetworkCredential, *, attempt_key: str
        ) -> NetworkIdentityResult:
            raise RuntimeError("boom")

    result = await run_network_check(Broken(), CREDENTIAL, attempt_key="k-1")

    assert result == NetworkIdentityResult.unavailable("verifier_error")


async def test_live_client_verifies_through_the_gateway(
    http: httpx.AsyncClient,
    make_client: Any,
    worker: Worker,
    runtime: Runtime,
    gateway: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a gateway configured, a live client's network identity verification passes through
    it and records the gateway as the verifier that answered."""
    verifier, seen = gateway(
        gateway_answer(result="pass", app_id="live-app-1", mode="credential", age_band="adult")
    )
    monkeypatch.setattr(runtime.verifiers, "network_live", verifier)
    _, live = await make_client("live", level="L1")

    v = await run(http, live, worker, network("opaque-live-token"))

    assert v["status"] == "verified"
    assert len(seen) == 1
    async with runtime.engine.connect() as conn:
        verifier_name = (await conn.execute(text("SELECT verifier FROM checks"))).scalar()
    assert verifier_name == "http_network_identity"


async def test_admins_read_a_network_identity_verification_like_any_other(
    http: httpx.AsyncClient, key: str, worker: Worker, runtime: Runtime
) -> None:
    """The admin API and the admin UI's detail page open a network identity verification (no
    masked identity fields to show), and the open is audited."""
    from tests.ui.test_ui_pages import make_admin, sign_in

    v = await run(http, key, worker, network("test_adult_erin"))
    token = await admin_token(http, runtime, "auditor")

    detail = await http.get(f"/v1/admin/verifications/{v['id']}", headers=bearer(token))
    await sign_in(http, await make_admin(runtime, "auditor"))
    page = await http.get(f"/admin/verifications/{v['id']}")

    assert detail.status_code == 200, detail.text
    assert detail.json()["status"] == "verified"
    assert page.status_code == 200
    async with runtime.engine.connect() as conn:
        opened = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM audit_events"
                    " WHERE subject_id = :v AND action LIKE 'admin.%'"
                ),
                {"v": v["id"]},
            )
        ).scalar()
    assert (opened or 0) >= 1


async def test_a_quarantined_network_identity_verifier_is_not_called(
    http: httpx.AsyncClient, key: str, worker: Worker, runtime: Runtime
) -> None:
    """Art. 25: with the sandbox network identity verifier quarantined, the check is not run
    and the verification waits for a person (needs_review, provider_quarantined)."""
    token = await admin_token(http, runtime, "admin")
    r = await http.post(
        "/v1/admin/emergency/quarantine-provider",
        json={"reason_code": "drill", "provider": "sandbox_network_identity"},
        headers=bearer(token),
    )
    assert r.status_code == 200, r.text

    v = await run(http, key, worker, network("test_adult_frank"))

    assert (v["status"], v["status_reason"]) == ("needs_review", "provider_quarantined")


async def test_export_events_and_consent_receipt_work_for_network_identity(
    http: httpx.AsyncClient, key: str, worker: Worker
) -> None:
    """The user's export (status history, checks, consent, tokens), the client's event list and
    the consent receipt cover a network identity verification as they do a resident-ID one."""
    v = await run(http, key, worker, network("test_adult_gina"))
    await token_for(http, key, v["id"])

    export = await http.get(f"/v1/verifications/{v['id']}/export", headers=auth(key))
    events = await http.get("/v1/events", headers=auth(key))
    receipt = await http.get(f"/v1/verifications/{v['id']}/consent-receipt", headers=auth(key))

    assert export.status_code == 200, export.text
    (mine,) = export.json()["verifications"]
    assert [h["status"] for h in mine["status_history"]] == ["pending", "verified"]
    assert mine["checks"][0]["type"] == "network_identity"
    assert len(mine["tokens"]) == 1
    assert "test_adult_gina" not in export.text
    assert "verification.verified" in {e["type"] for e in events.json()["data"]}
    assert receipt.status_code == 200, receipt.text


async def test_an_external_user_id_holding_an_id_number_is_refused(
    http: httpx.AsyncClient, key: str
) -> None:
    """As for resident IDs, the external user id may not carry an ID number."""
    r = await http.post(
        "/v1/verifications",
        json=network("test_adult", external_user_id="11010519491231002X"),
        headers=auth(key),
    )

    assert r.status_code == 422
    assert r.json()["code"] == "invalid_external_user_id"
