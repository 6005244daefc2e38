"""Keyed blind indexes and the argon2 input encoding."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.identity import BlindIndexer, hash_identity_input

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(1, 33))
ID = "11010519491231002X"


def indexer() -> BlindIndexer:
    """An indexer with two key versions, version 2 current."""
    return BlindIndexer({1: KEY_1, 2: KEY_2}, current_version=2)


def test_same_value_same_digest() -> None:
    """The index is deterministic, also across instances."""
    assert indexer().compute("id_number", ID) == indexer().compute("id_number", ID)


def test_digest_is_lowercase_hex_sha256() -> None:
    """Digests are 64 lowercase hex characters."""
    digest = indexer().compute("phone", "+8613800138000")
    assert len(digest) == 64
    assert digest == digest.lower()
    int(digest, 16)


def test_digest_matches_hkdf_then_hmac() -> None:
    """The digest is HMAC-SHA256 under the HKDF-SHA256 per-field key."""
    field_key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"realname/blind-index/v1/phone"
    ).derive(KEY_2)
    expected = hmac.new(field_key, b"+8613800138000", hashlib.sha256).hexdigest()
    assert indexer().compute("phone", "+8613800138000") == expected


def test_different_values_differ() -> None:
    """Different values give different digests."""
    assert indexer().compute("id_number", ID) != indexer().compute(
        "id_number", "440305199003071236"
    )


def test_different_fields_differ() -> None:
    """The same value indexed under two fields gives unrelated digests."""
    assert indexer().compute("id_number", ID) != indexer().compute("real_name", ID)


def test_different_versions_differ() -> None:
    """The same value under two key versions gives different digests."""
    idx = indexer()
    assert idx.compute("id_number", ID, 1) != idx.compute("id_number", ID, 2)


def test_default_version_is_current() -> None:
    """compute() without a version uses the current version."""
    idx = indexer()
    assert idx.current_version == 2
    assert idx.compute("phone", "+8613800138000") == idx.compute("phone", "+8613800138000", 2)


def test_candidates_current_first() -> None:
    """candidates() lists every version of both suites, the current suite and version first."""
    idx = BlindIndexer({1: KEY_1, 2: KEY_2, 3: KEY_1 + b"x"}, current_version=2)
    candidates = idx.candidates("id_number", ID)
    assert [(c.suite, c.version) for c in candidates] == [
        ("intl", 2),
        ("intl", 3),
        ("intl", 1),
        ("gm", 2),
        ("gm", 3),
        ("gm", 1),
    ]
    assert candidates[0].digest == idx.compute("id_number", ID)


def test_unknown_version_is_refused() -> None:
    """compute() with an unknown key version raises ValueError."""
    with pytest.raises(ValueError, match="unknown"):
        indexer().compute("id_number", ID, 7)


def test_short_key_is_refused() -> None:
    """Keys shorter than 32 bytes are refused."""
    with pytest.raises(ValueError, match="32 bytes"):
        BlindIndexer({1: KEY_1, 2: b"k" * 31}, current_version=1)


def test_missing_current_version_is_refused() -> None:
    """current_version must name a configured key."""
    with pytest.raises(ValueError, match="current_version"):
        BlindIndexer({1: KEY_1}, current_version=2)


def test_repr_does_not_reveal_keys() -> None:
    """The indexer's repr does not contain key material."""
    assert KEY_1.hex() not in repr(indexer())
    assert repr(KEY_1) not in repr(indexer())


def test_hash_identity_input_is_deterministic_json() -> None:
    """The argon2 input is the compact UTF-8 JSON array of the tuple."""
    encoded = hash_identity_input("张三", ID, "+8613800138000")
    assert encoded == hash_identity_input("张三", ID, "+8613800138000")
    assert json.loads(encoded.decode("utf-8")) == ["张三", ID, "+8613800138000"]
    assert "张三".encode() in encoded


def test_hash_identity_input_is_unambiguous() -> None:
    """Shifting characters between fields changes the encoding."""
    assert hash_identity_input("ab", "c", "d") != hash_identity_input("a", "bc", "d")
    assert hash_identity_input('a","b', "c", "d") != hash_identity_input("a", "b", "c")
