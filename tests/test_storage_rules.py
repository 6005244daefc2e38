"""The storage rules: nothing personal in plaintext in the database, logs or answers."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from app.logging import JsonFormatter
from app.runtime import Runtime
from tests.conftest import auth
from tests.support import canary_forms, dump_database, raw_database_bytes, to_fullwidth

CANARY_NAME = "欧阳金丝雀"
CANARY_ID = "440305199003071236"
CANARY_PHONE = "13987654321"


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def _formatted(caplog: pytest.LogCaptureFixture) -> str:
    fmt = JsonFormatter()
    return caplog.text + "\n".join(fmt.format(r) for r in caplog.records)


async def _register_canary(
    http: httpx.AsyncClient, key: str, *, full_width: bool = False
) -> dict[str, Any]:
    payload = {
        "external_user_id": "canary-user",
        "real_name": CANARY_NAME,
        "id_number": to_fullwidth(CANARY_ID) if full_width else CANARY_ID,
        "phone": to_fullwidth(CANARY_PHONE) if full_width else "+86" + CANARY_PHONE,
        "consent": {"policy_version": "2026-01"},
        "level": "L3",
    }
    r = await http.post(
        "/v1/verifications", json=payload, headers=auth(key, **{"Idempotency-Key": "canary-1"})
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.mark.parametrize("full_width", [False, True], ids=["ascii", "full-width"])
async def test_canary_identity_leaves_no_plaintext_anywhere(
    http: httpx.AsyncClient,
    api_key: str,
    runtime: Runtime,
    captured_logs: pytest.LogCaptureFixture,
    full_width: bool,
) -> None:
    """After registering canary values, no form of them is in the database, the logs or answers."""
    created = await _register_canary(http, api_key, full_width=full_width)
    fetched = (await http.get(f"/v1/verifications/{created['id']}", headers=auth(api_key))).text
    # A bad request carrying the canary must not echo it either.
    refused = (
        await http.post(
            "/v1/verifications",
            json={
                "external_user_id": "x",
                "real_name": CANARY_NAME + "\u200b",
                "id_number": CANARY_ID[:17] + "0",
                "phone": CANARY_PHONE[:10],
                "consent": {"policy_version": "2026-01"},
            },
            headers=auth(api_key),
        )
    ).text
    haystacks = {
        "database rows": await dump_database(runtime),
        "database bytes": (await raw_database_bytes(runtime)).decode("utf-8", "replace"),
        "logs": _formatted(captured_logs),
        "answers": json.dumps(created, ensure_ascii=False) + fetched + refused,
    }
    for where, text in haystacks.items():
        for form in canary_forms(CANARY_NAME, CANARY_ID, CANARY_PHONE):
            assert form not in text, f"{form!r} found in {where}"
    assert captured_logs.records, "the scan must have seen log output"


async def test_database_holds_masks_and_keyed_digests(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    """What is stored is the masked display values and keyed blind indexes with a key version."""
    created = await _register_canary(http, api_key)
    dump = await dump_database(runtime)
    assert "欧****" in dump
    assert "440305********1236" in dump
    assert "139****4321" in dump
    assert runtime.blind.compute("id_number", CANARY_ID) in dump
    assert runtime.blind.compute("phone", "+86" + CANARY_PHONE) in dump
    assert created["masked"]["phone"] == "139****4321"


async def test_blind_index_is_keyed_not_a_plain_hash(runtime: Runtime) -> None:
    """The stored digest differs from unkeyed SHA-256/MD5 of the ID number."""
    import hashlib

    digest = runtime.blind.compute("id_number", CANARY_ID)
    assert digest not in {
        hashlib.sha256(CANARY_ID.encode()).hexdigest(),
        hashlib.md5(CANARY_ID.encode(), usedforsecurity=False).hexdigest(),
    }


async def test_identity_hash_is_argon2id(
    http: httpx.AsyncClient, api_key: str, runtime: Runtime
) -> None:
    """The identity tuple is kept as an argon2id hash that verifies against the canonical fields."""
    from sqlmodel import select

    from app.identity import hash_identity_input
    from app.models import Verification

    created = await _register_canary(http, api_key)
    async with runtime.sessions() as session:
        row = (
            await session.execute(select(Verification).where(Verification.id == created["id"]))
        ).scalar_one()
    assert row.identity_hash is not None
    assert row.identity_hash.startswith("$argon2id$")
    assert await runtime.identity_hasher.verify(
        row.identity_hash, hash_identity_input(CANARY_NAME, CANARY_ID, "+86" + CANARY_PHONE)
    )
    assert not await runtime.identity_hasher.verify(
        row.identity_hash, hash_identity_input("王五", CANARY_ID, "+86" + CANARY_PHONE)
    )
