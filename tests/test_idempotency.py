"""Idempotency-Key on POST /v1/verifications."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text

from app.runtime import Runtime
from tests.conftest import auth
from tests.test_intake import GOOD


async def test_same_key_same_body_replays(http: httpx.AsyncClient, api_key: str) -> None:
    """A retry with the same key and body gets the first answer back, marked as replayed."""
    first = await http.post(
        "/v1/verifications", json=GOOD, headers=auth(api_key, **{"Idempotency-Key": "k-1"})
    )
    again = await http.post(
        "/v1/verifications", json=GOOD, headers=auth(api_key, **{"Idempotency-Key": "k-1"})
    )
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_same_key_other_body_is_a_conflict(http: httpx.AsyncClient, api_key: str) -> None:
    """The same key with a different body is idempotency_conflict (422)."""
    await http.post(
        "/v1/verifications", json=GOOD, headers=auth(api_key, **{"Idempotency-Key": "k-2"})
    )
    r = await http.post(
        "/v1/verifications",
        json={**GOOD, "external_user_id": "other"},
        headers=auth(api_key, **{"Idempotency-Key": "k-2"}),
    )
    assert r.status_code == 422
    assert r.json()["code"] == "idempotency_conflict"


async def test_keys_are_per_client(http: httpx.AsyncClient, make_client: object) -> None:
    """Two clients may use the same key independently."""
    _, a = await make_client(level="L1", name="A")  # type: ignore[operator]
    _, b = await make_client(level="L1", name="B")  # type: ignore[operator]
    ra = await http.post(
        "/v1/verifications", json=GOOD, headers=auth(a, **{"Idempotency-Key": "same"})
    )
    rb = await http.post(
        "/v1/verifications", json=GOOD, headers=auth(b, **{"Idempotency-Key": "same"})
    )
    assert ra.status_code == rb.status_code == 201
    assert ra.json()["id"] != rb.json()["id"]


async def test_concurrent_retries_create_one_verification(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    """Ten concurrent retries with one key create exactly one verification, all see its id."""
    answers = await asyncio.gather(
        *(
            http.post(
                "/v1/verifications", json=GOOD, headers=auth(api_key, **{"Idempotency-Key": "race"})
            )
            for _ in range(10)
        )
    )
    ok = [r for r in answers if r.status_code == 201]
    assert {r.status_code for r in answers} <= {201, 409}
    assert len({r.json()["id"] for r in ok}) == 1
    async with runtime.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM verifications"))).scalar() == 1


async def test_invalid_key_is_refused(http: httpx.AsyncClient, api_key: str) -> None:
    """A key with spaces or over 255 characters is refused with invalid_idempotency_key."""
    for key in ("has space", "x" * 256):
        r = await http.post(
            "/v1/verifications", json=GOOD, headers=auth(api_key, **{"Idempotency-Key": key})
        )
        assert r.status_code == 400
        assert r.json()["code"] == "invalid_idempotency_key"
