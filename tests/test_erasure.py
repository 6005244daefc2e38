"""Erasure (Art. 43): nothing derived from the person is left but a PII-free tombstone."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text

from app.runtime import Runtime
from app.services import audit
from app.worker import Worker
from tests.conftest import auth
from tests.support import dump_database, raw_database_bytes
from tests.test_intake import GOOD
from tests.test_lifecycle import inbox_code, start, submit


async def _derived_values(runtime: Runtime, vid: str) -> list[str]:
    """Every stored value derived from the person behind ``vid``."""
    async with runtime.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT v.name_bidx, v.phone_bidx, v.identity_hash, v.masked_name,"
                    " v.masked_id_number, v.masked_phone, v.sealed_subject, i.id_number_bidx,"
                    " i.id, i.adult_on_sealed FROM verifications v"
                    " JOIN identities i ON i.id = v.identity_id WHERE v.id = :v"
                ),
                {"v": vid},
            )
        ).one()
        codes = [
            r[0]
            for r in (
                await conn.execute(
                    text("SELECT code_hmac FROM sms_codes WHERE verification_id = :v"), {"v": vid}
                )
            )
        ]
        inbox = [
            r[0]
            for r in (
                await conn.execute(
                    text("SELECT body FROM sandbox_messages WHERE verification_id = :v"), {"v": vid}
                )
            )
        ]
    values = [str(x) for x in row if x is not None] + codes + inbox
    return [v for v in values if v not in {"None"}]


async def test_erasure_leaves_only_the_tombstone(
    http: httpx.AsyncClient, make_client: Any, worker: Worker, runtime: Runtime
) -> None:
    """After DELETE, no blind index, hash, mask, code, message or identity row of the person is
    anywhere in the database; the tombstone and its audit event remain."""
    _, key = await make_client("test", level="L2")
    # A distinctive person: the shipped policy text quotes the usual example masks.
    v = await start(
        http,
        key,
        worker,
        real_name="欧阳金丝雀",
        id_number="440305199003071236",
        phone="13987654321",
    )
    await submit(http, key, v["id"], await inbox_code(http, key, v["id"]))
    derived = await _derived_values(runtime, v["id"])
    assert len(derived) >= 9
    r = await http.delete(f"/v1/verifications/{v['id']}", headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "erased"
    assert body["masked"] == {"real_name": None, "id_number": None, "phone": None}
    dump = await dump_database(runtime) + (await raw_database_bytes(runtime)).decode(
        "utf-8", "replace"
    )
    for value in derived:
        assert value not in dump, f"{value!r} survived erasure"
    async with runtime.engine.connect() as conn:
        assert (
            await conn.execute(
                text("SELECT status FROM verifications WHERE id = :v"), {"v": v["id"]}
            )
        ).scalar() == "erased"


async def test_erasure_receipt_points_at_a_verifiable_audit_event(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """The receipt names the audit event recording the erasure, and the chain still verifies."""
    v = await start(http, api_key, worker)
    receipt = (await http.delete(f"/v1/verifications/{v['id']}", headers=auth(api_key))).json()[
        "erasure"
    ]
    async with runtime.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT action, hash FROM audit_events WHERE seq = :s"),
                {"s": receipt["audit_event_seq"]},
            )
        ).one()
    assert row == ("verification.erased", receipt["audit_event_hash"])
    assert receipt["receipt_id"].startswith("rcpt_")
    async with runtime.sessions() as session:
        assert (await audit.verify_chain(session)).ok


async def test_erasure_is_idempotent(http: httpx.AsyncClient, api_key: str, worker: Worker) -> None:
    """Erasing twice returns the same receipt."""
    v = await start(http, api_key, worker)
    first = (await http.delete(f"/v1/verifications/{v['id']}", headers=auth(api_key))).json()[
        "erasure"
    ]
    again = (await http.delete(f"/v1/verifications/{v['id']}", headers=auth(api_key))).json()[
        "erasure"
    ]
    assert first == again


async def test_person_can_register_again_after_erasure(
    http: httpx.AsyncClient, api_key: str, worker: Worker
) -> None:
    """Once erased, the same person may register (even as another user of the client)."""
    v = await start(http, api_key, worker)
    await http.delete(f"/v1/verifications/{v['id']}", headers=auth(api_key))
    again = await http.post(
        "/v1/verifications",
        json={**GOOD, "external_user_id": "someone-else"},
        headers=auth(api_key),
    )
    assert again.status_code == 201, again.text


async def test_erasure_covers_the_clients_other_verifications_of_the_person(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """Every verification the client holds for the person is erased together."""
    first = await start(http, api_key, worker, real_name="不一致")
    second = await start(http, api_key, worker)
    receipt = (
        await http.delete(f"/v1/verifications/{second['id']}", headers=auth(api_key))
    ).json()["erasure"]
    assert set(receipt["verification_ids"]) == {first["id"], second["id"]}
    assert (await http.get(f"/v1/verifications/{first['id']}", headers=auth(api_key))).json()[
        "status"
    ] == "erased"


async def test_erasure_keeps_another_clients_record(
    http: httpx.AsyncClient, make_client: Any, worker: Worker, runtime: Runtime
) -> None:
    """Client A erasing its user leaves client B's verification of the same person intact."""
    _, a = await make_client("test", level="L1", name="A")
    _, b = await make_client("test", level="L1", name="B")
    va = await start(http, a, worker)
    vb = await start(http, b, worker)
    await http.delete(f"/v1/verifications/{va['id']}", headers=auth(a))
    kept = (await http.get(f"/v1/verifications/{vb['id']}", headers=auth(b))).json()
    assert kept["status"] == "verified"
    assert kept["masked"]["id_number"] == "110105********002X"


async def test_erasure_removes_stored_idempotent_answers(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """The stored Idempotency-Key answer (which holds masked values) goes with the erasure."""
    r = await http.post(
        "/v1/verifications", json=GOOD, headers=auth(api_key, **{"Idempotency-Key": "erase-me"})
    )
    await http.delete(f"/v1/verifications/{r.json()['id']}", headers=auth(api_key))
    async with runtime.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM idempotency_keys"))).scalar() == 0


async def test_other_clients_cannot_erase(
    http: httpx.AsyncClient, make_client: Any, worker: Worker
) -> None:
    """Another client's DELETE is a 404 and changes nothing."""
    _, a = await make_client("test", level="L1", name="A")
    _, b = await make_client("test", level="L1", name="B")
    v = await start(http, a, worker)
    assert (await http.delete(f"/v1/verifications/{v['id']}", headers=auth(b))).status_code == 404
    assert (await http.get(f"/v1/verifications/{v['id']}", headers=auth(a))).json()[
        "status"
    ] == "verified"


async def test_erasure_covers_the_users_attempts_with_another_number(
    http: httpx.AsyncClient, api_key: str, worker: Worker, runtime: Runtime
) -> None:
    """An earlier attempt by the same user with a mistyped number is erased too, and the
    tombstone no longer shows the user id."""
    first = await start(http, api_key, worker, real_name="不一致", id_number="440305199003071236")
    second = await start(http, api_key, worker)
    body = (await http.delete(f"/v1/verifications/{second['id']}", headers=auth(api_key))).json()
    assert first["id"] in body["erasure"]["verification_ids"]
    assert body["external_user_id"] == "[erased]"
    async with runtime.engine.connect() as conn:
        left = (await conn.execute(text("SELECT count(*) FROM identities"))).scalar()
        masks = (
            await conn.execute(
                text("SELECT count(*) FROM verifications WHERE masked_phone IS NOT NULL")
            )
        ).scalar()
    assert (left, masks) == (0, 0)
