"""Verification intake: POST /v1/verifications and GET /v1/verifications/{id}."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import auth

GOOD: dict[str, Any] = {
    "external_user_id": "user-1",
    "real_name": "张三",
    "id_number": "11010519491231002X",
    "phone": "13800138000",
    "consent": {"policy_version": "2026-01"},
}


def body(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


async def test_create_returns_masked_pending_verification(
    http: httpx.AsyncClient, api_key: str
) -> None:
    """A well-formed request creates a verification showing only masked values."""
    r = await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))
    assert r.status_code == 201, r.text
    data = r.json()
    assert data["id"].startswith("ver_")
    assert data["level"] == "L1"
    assert data["masked"] == {
        "real_name": "张*",
        "id_number": "110105********002X",
        "phone": "138****8000",
    }
    assert [c["type"] for c in data["checks"]] == ["id_registry"]
    assert set(data) >= {
        "id",
        "status",
        "level",
        "checks",
        "masked",
        "next_action",
        "created_at",
        "updated_at",
    }


async def test_get_returns_the_same_verification(http: httpx.AsyncClient, api_key: str) -> None:
    """GET returns the verification that POST created."""
    created = (await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))).json()
    r = await http.get(f"/v1/verifications/{created['id']}", headers=auth(api_key))
    assert r.status_code == 200
    assert r.json()["id"] == created["id"]
    assert r.json()["masked"] == created["masked"]


async def test_client_default_level_applies(http: httpx.AsyncClient, make_client: Any) -> None:
    """Without a level, the client's default (L2 here) decides the checks."""
    _, key = await make_client(level="L2")
    data = (await http.post("/v1/verifications", json=GOOD, headers=auth(key))).json()
    assert data["level"] == "L2"
    assert [c["type"] for c in data["checks"]] == ["id_registry", "sms_otp"]


async def test_level_below_client_policy_is_refused(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """A verification may ask for a higher level than the client's policy, never a lower one."""
    _, key = await make_client(level="L2")
    r = await http.post("/v1/verifications", json=body(level="L1"), headers=auth(key))
    assert r.status_code == 422
    assert r.json()["code"] == "level_too_low"


async def test_higher_level_adds_carrier_check(http: httpx.AsyncClient, api_key: str) -> None:
    """L3 adds the carrier three-element check."""
    data = (
        await http.post("/v1/verifications", json=body(level="L3"), headers=auth(api_key))
    ).json()
    assert [c["type"] for c in data["checks"]] == ["id_registry", "sms_otp", "carrier_3e"]


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"id_number": "110105194912310021"}, "invalid_id_number"),
        ({"id_number": "110105491231002"}, "invalid_id_number"),
        ({"id_number": "٣١٠١٠٤٢٠٠٠٠٢٢٩٠٠٣٠"}, "invalid_id_number"),
        ({"phone": "12345678901"}, "invalid_phone"),
        ({"phone": "+85291234567"}, "invalid_phone"),
        ({"real_name": "张\u200b三"}, "invalid_real_name"),
        ({"real_name": "张\u202e三"}, "invalid_real_name"),
        ({"real_name": ""}, "invalid_real_name"),
        ({"consent": {"policy_version": "1999-01"}}, "consent_required"),
        ({"consent": {}}, "consent_required"),
        ({"consent": None}, "consent_required"),
        ({"id_type": "passport"}, "unsupported_id_type"),
        ({"level": "L9"}, "invalid_request"),
        ({"external_user_id": ""}, "invalid_external_user_id"),
        ({"nickname": "x"}, "unknown_field"),
        ({"real_name": 5}, "invalid_real_name"),
    ],
)
async def test_each_bad_field_has_its_own_code(
    http: httpx.AsyncClient, api_key: str, changes: dict[str, Any], code: str
) -> None:
    """Every bad field gets a 4xx problem+json with the field's stable code."""
    r = await http.post("/v1/verifications", json=body(**changes), headers=auth(api_key))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code
    assert {"type", "title", "status", "detail", "code"} <= set(r.json())


async def test_missing_consent_is_consent_required(http: httpx.AsyncClient, api_key: str) -> None:
    """Leaving out consent altogether is refused with consent_required."""
    payload = dict(GOOD)
    del payload["consent"]
    r = await http.post("/v1/verifications", json=payload, headers=auth(api_key))
    assert r.status_code == 422
    assert r.json()["code"] == "consent_required"


async def test_all_bad_identity_fields_are_reported_together(
    http: httpx.AsyncClient, api_key: str
) -> None:
    """Several bad fields are listed at once, each with a pointer and a code."""
    r = await http.post(
        "/v1/verifications",
        json=body(id_number="1", phone="2", real_name="3"),
        headers=auth(api_key),
    )
    codes = {e["pointer"]: e["code"] for e in r.json()["errors"]}
    assert codes == {
        "/real_name": "invalid_real_name",
        "/id_number": "invalid_id_number",
        "/phone": "invalid_phone",
    }


async def test_error_bodies_never_echo_input(http: httpx.AsyncClient, api_key: str) -> None:
    """A refused value does not appear anywhere in the error body."""
    r = await http.post(
        "/v1/verifications",
        json=body(
            id_number="110105194912310021", phone="12345678901", real_name="李四\u200b", level="L7"
        ),
        headers=auth(api_key),
    )
    assert r.status_code == 422
    for value in ("110105194912310021", "12345678901", "李四", "L7"):
        assert value not in r.text


async def test_full_width_input_is_canonicalised(http: httpx.AsyncClient, api_key: str) -> None:
    """Full-width digits and X are the same person as their ASCII form."""
    r = await http.post(
        "/v1/verifications",
        json=body(
            id_number="１１０１０５１９４９１２３１００２ｘ", phone="＋８６ １３８００１３８０００"
        ),
        headers=auth(api_key),
    )
    assert r.status_code == 201, r.text
    assert r.json()["masked"]["id_number"] == "110105********002X"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer rn_test_not-a-key"}, 401, "unauthorized"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 401, "invalid_client"),
    ],
)
async def test_bad_keys_are_401(
    http: httpx.AsyncClient, headers: dict[str, str], status: int, code: str
) -> None:
    """A missing or unknown API key, or Basic credentials of no client, is a 401 problem."""
    r = await http.post("/v1/verifications", json=GOOD, headers=headers)
    assert r.status_code == status
    assert r.json()["code"] == code


async def test_other_clients_verification_is_404(http: httpx.AsyncClient, make_client: Any) -> None:
    """A client sees only its own verifications: another client's id is a 404."""
    _, key_a = await make_client(level="L1", name="A")
    _, key_b = await make_client(level="L1", name="B")
    created = (await http.post("/v1/verifications", json=GOOD, headers=auth(key_a))).json()
    r = await http.get(f"/v1/verifications/{created['id']}", headers=auth(key_b))
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


async def test_wrong_content_type_is_415(http: httpx.AsyncClient, api_key: str) -> None:
    """A body that is not JSON by content type is refused with 415."""
    r = await http.post(
        "/v1/verifications",
        content=b"external_user_id=x",
        headers=auth(api_key, **{"Content-Type": "application/x-www-form-urlencoded"}),
    )
    assert r.status_code == 415
    assert r.json()["code"] == "unsupported_media_type"


async def test_oversized_body_is_413(http: httpx.AsyncClient, api_key: str) -> None:
    """A body over the limit is refused with 413 before it is parsed."""
    r = await http.post(
        "/v1/verifications", json=body(external_user_id="x" * 20000), headers=auth(api_key)
    )
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"


async def test_malformed_json_is_400(http: httpx.AsyncClient, api_key: str) -> None:
    """Broken JSON is a 400 malformed_json, not a 500."""
    r = await http.post(
        "/v1/verifications",
        content=b'{"real_name": ',
        headers=auth(api_key, **{"Content-Type": "application/json"}),
    )
    assert r.status_code == 400
    assert r.json()["code"] == "malformed_json"


async def test_same_person_cannot_be_two_users_of_one_client(
    http: httpx.AsyncClient, api_key: str
) -> None:
    """One person is one user per client while their verification is live."""
    first = await http.post("/v1/verifications", json=GOOD, headers=auth(api_key))
    assert first.status_code == 201
    r = await http.post(
        "/v1/verifications", json=body(external_user_id="user-2"), headers=auth(api_key)
    )
    assert r.status_code == 409
    assert r.json()["code"] == "identity_in_use"


async def test_same_person_may_register_with_another_client(
    http: httpx.AsyncClient, make_client: Any
) -> None:
    """The one-user rule is per client: another client may register the same person."""
    _, key_a = await make_client(level="L1", name="A")
    _, key_b = await make_client(level="L1", name="B")
    assert (await http.post("/v1/verifications", json=GOOD, headers=auth(key_a))).status_code == 201
    assert (await http.post("/v1/verifications", json=GOOD, headers=auth(key_b))).status_code == 201


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/policies/a%00b"), ("GET", "/v1/sandbox/messages?verification_id=a%00b")],
)
async def test_nul_characters_in_the_address_are_refused(
    http: httpx.AsyncClient, api_key: str, method: str, path: str
) -> None:
    """NUL in a path or query is a 400, on every database (PostgreSQL cannot store it)."""
    r = await http.request(method, path, headers=auth(api_key))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({**GOOD, "external_user_id": "a\u0000b"}, "invalid_external_user_id"),
        ({**GOOD, "consent": {"policy_version": "2026\u000001"}}, "consent_required"),
    ],
)
async def test_nul_characters_in_json_strings_are_refused(
    http: httpx.AsyncClient, api_key: str, payload: Any, code: str
) -> None:
    """NUL in a JSON string is a 422 naming the field, on every database."""
    r = await http.post("/v1/verifications", json=payload, headers=auth(api_key))
    assert (r.status_code, r.json()["code"]) == (422, code), r.text
