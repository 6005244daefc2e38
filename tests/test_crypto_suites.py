"""The Guomi (GM/T) crypto suite: national-standard vectors, the gm seal and index formats, the
whole integrator flow under ``REALNAME_CRYPTO_SUITE=gm``, and a switch of suites on a running
database (people indexed before the switch are still found; ``realname reindex`` reseals)."""

from __future__ import annotations

import base64
import hashlib
import hmac as std_hmac
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import text

from app.crypto import GM_SEAL_PREFIX, keyed_hash, reseal, seal, unseal
from app.identity import BlindIndexer
from app.main import create_app
from app.runtime import Runtime, build_runtime
from app.services import reindex
from app.worker import Worker
from tests.conftest import auth
from tests.test_intake import GOOD
from tests.test_tokens import token_for, verified

MASTER = b"m" * 32
SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")


# --- national-standard vectors -----------------------------------------------------------------


def test_sm3_of_abc_is_the_gbt_32905_vector() -> None:
    """SM3("abc") is the GB/T 32905-2016 (GM/T 0004-2012) example digest."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(b"abc")

    assert digest.finalize().hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )


def test_sm4_block_is_the_gbt_32907_vector() -> None:
    """SM4 with key = plaintext = 0123456789abcdeffedcba9876543210 gives 681edf34…4246."""
    encryptor = Cipher(algorithms.SM4(SM4_KEY), modes.ECB()).encryptor()  # noqa: S305 (one block)

    block = encryptor.update(SM4_KEY) + encryptor.finalize()

    assert block.hex() == "681edf34d206965e86b3e94f536e4246"


# --- seals and keyed hashes --------------------------------------------------------------------


def test_gm_seal_is_marked_and_opens() -> None:
    """A gm seal starts with sm4-gcm. and opens to the plaintext under the same row."""
    token = seal(MASTER, "purpose", b"secret", b"row-1", "gm")

    assert token.startswith(GM_SEAL_PREFIX)
    assert unseal(MASTER, "purpose", token, b"row-1") == b"secret"


def test_gm_seal_is_sm4_gcm_under_an_sm3_derived_key() -> None:
    """The gm seal is SM4-GCM (96-bit nonce, 128-bit tag) under HKDF-SM3(master, purpose)."""
    token = seal(MASTER, "purpose", b"secret", b"row-1", "gm")
    raw = base64.urlsafe_b64decode(token[len(GM_SEAL_PREFIX) :])
    key = HKDF(hashes.SM3(), 16, None, b"realname/gm/purpose").derive(MASTER)
    decryptor = Cipher(algorithms.SM4(key), modes.GCM(raw[:12], raw[-16:])).decryptor()
    decryptor.authenticate_additional_data(b"row-1")

    assert decryptor.update(raw[12:-16]) + decryptor.finalize() == b"secret"


@pytest.mark.parametrize("suite", ["intl", "gm"])
def test_a_seal_does_not_open_for_another_row(suite: Any) -> None:
    """The row binding holds under both suites: another row's aad fails authentication."""
    token = seal(MASTER, "purpose", b"secret", b"row-1", suite)

    with pytest.raises(InvalidTag):
        unseal(MASTER, "purpose", token, b"row-2")


def test_reseal_moves_a_value_between_suites_once() -> None:
    """reseal() turns an intl seal into a gm one with the same plaintext, then has nothing to do."""
    old = seal(MASTER, "purpose", b"secret", b"row-1")

    moved = reseal(MASTER, "purpose", old, b"row-1", "gm")

    assert moved is not None
    assert moved.startswith(GM_SEAL_PREFIX)
    assert unseal(MASTER, "purpose", moved, b"row-1") == b"secret"
    assert reseal(MASTER, "purpose", moved, b"row-1", "gm") is None


def test_gm_keyed_hash_is_hmac_sm3() -> None:
    """keyed_hash under gm is HMAC-SM3 with the HKDF-SM3 purpose key; 64 hex like intl."""
    key = HKDF(hashes.SM3(), 32, None, b"realname/gm/otp").derive(MASTER)
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(b"data")

    assert keyed_hash(MASTER, "otp", b"data", "gm") == mac.finalize().hex()
    assert keyed_hash(MASTER, "otp", b"data", "gm") != keyed_hash(MASTER, "otp", b"data")


def test_gm_blind_index_is_hmac_sm3_under_a_field_key() -> None:
    """A gm blind index is HMAC-SM3 under HKDF-SM3(key, "realname/blind-index/gm/v1/<field>")."""
    indexer = BlindIndexer({1: MASTER}, 1, "gm")
    key = HKDF(hashes.SM3(), 32, None, b"realname/blind-index/gm/v1/id_number").derive(MASTER)
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(b"11010519491231002X")

    assert indexer.compute("id_number", "11010519491231002X") == mac.finalize().hex()
    assert indexer.current("id_number", "11010519491231002X").suite == "gm"


def test_intl_blind_index_is_unchanged() -> None:
    """The default suite still gives HMAC-SHA-256 under the v1 field key (existing rows match)."""
    indexer = BlindIndexer({1: MASTER}, 1)
    key = HKDF(hashes.SHA256(), 32, None, b"realname/blind-index/v1/phone").derive(MASTER)

    assert indexer.compute("phone", "+8613800138000") == (
        std_hmac.new(key, b"+8613800138000", hashlib.sha256).hexdigest()
    )


# --- on a real database ------------------------------------------------------------------------


@pytest.fixture
async def gm_runtime(runtime: Runtime) -> AsyncIterator[Runtime]:
    """A second process's runtime on the same database, configured with the gm suite."""
    gm = build_runtime(runtime.settings.model_copy(update={"crypto_suite": "gm"}))
    yield gm
    await gm.close()


@pytest.fixture
async def gm_http(gm_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime=gm_runtime)),
        base_url="http://testserver",
    ) as client:
        yield client


async def _rows(runtime: Runtime, sql: str) -> list[Any]:
    async with runtime.engine.connect() as conn:
        return list((await conn.execute(text(sql))).all())


async def test_integrator_flow_passes_under_gm(
    gm_http: httpx.AsyncClient, gm_runtime: Runtime, make_client: Any
) -> None:
    """L2 with the gm suite: code, verified, token with the adult claim; the person's index,
    seal and code HMAC are all marked gm."""
    _, key = await make_client("test", level="L2")

    v = await verified(gm_http, key, Worker(gm_runtime))
    claims = jwt.decode(await token_for(gm_http, key, v["id"]), options={"verify_signature": False})

    assert claims["adult"] is True
    identity = await _rows(gm_runtime, "SELECT bidx_suite, adult_on_sealed FROM identities")
    assert identity[0][0] == "gm"
    assert identity[0][1].startswith(GM_SEAL_PREFIX)
    assert await _rows(gm_runtime, "SELECT DISTINCT suite FROM sms_codes") == [("gm",)]
    assert await _rows(gm_runtime, "SELECT DISTINCT bidx_suite FROM verifications") == [("gm",)]


async def test_people_indexed_before_a_switch_are_still_found(
    http: httpx.AsyncClient,
    gm_http: httpx.AsyncClient,
    make_client: Any,
    worker: Worker,
) -> None:
    """A person verified under intl is recognised by a gm process: another user of the same
    client cannot take them (identity_in_use)."""
    _, key = await make_client("test", level="L1")
    await verified(http, key, worker)

    r = await gm_http.post(
        "/v1/verifications", json={**GOOD, "external_user_id": "someone-else"}, headers=auth(key)
    )

    assert r.status_code == 409, r.text
    assert r.json()["code"] == "identity_in_use"


async def test_a_person_presenting_again_is_reindexed_under_the_new_suite(
    http: httpx.AsyncClient,
    gm_http: httpx.AsyncClient,
    gm_runtime: Runtime,
    make_client: Any,
    worker: Worker,
) -> None:
    """The same user verifying again after the switch keeps their identity, now indexed gm."""
    _, key = await make_client("test", level="L1")
    await verified(http, key, worker)
    before = await _rows(gm_runtime, "SELECT id, bidx_suite FROM identities")

    await verified(gm_http, key, Worker(gm_runtime))

    after = await _rows(gm_runtime, "SELECT id, bidx_suite FROM identities")
    assert [row[1] for row in before] == ["intl"]
    assert after == [(before[0][0], "gm")]


async def test_reindex_reseals_and_reports_what_waits_for_presentation(
    http: httpx.AsyncClient,
    gm_http: httpx.AsyncClient,
    gm_runtime: Runtime,
    make_client: Any,
    worker: Worker,
) -> None:
    """After the switch, reindex reseals the coming-of-age date under SM4-GCM (the token's
    adult claim still reads it) and counts the identity still indexed intl."""
    _, key = await make_client("test", level="L1")
    v = await verified(http, key, worker)

    report = await reindex.run(gm_runtime)
    again = await reindex.run(gm_runtime)

    assert report.resealed["identities.adult_on"] == 1
    assert again.resealed["identities.adult_on"] == 0
    assert report.identities_by_index == {"intl:1": 1}
    assert report.awaiting_presentation == 1
    sealed = await _rows(gm_runtime, "SELECT adult_on_sealed FROM identities")
    assert sealed[0][0].startswith(GM_SEAL_PREFIX)
    claims = jwt.decode(await token_for(gm_http, key, v["id"]), options={"verify_signature": False})
    assert claims["adult"] is True
