"""The subject: one redacted type for a person's canonical fields, and its versioned seal."""

from __future__ import annotations

import json
from datetime import date
from typing import get_args

import pytest
from cryptography.exceptions import InvalidTag

from app.crypto import Suite, seal, unseal
from app.identity import Subject
from app.identity.subject import SUBJECT_SEAL, SealFormatError

MASTER = bytes(range(32))
AAD = b"ver_0123456789"
PERSON = Subject(real_name="张三", id_number="11010519491231002X", phone="+8613800138000")


def test_repr_and_str_are_redacted() -> None:
    """Neither repr, str nor an f-string shows a field."""
    shown = f"{PERSON!r} {PERSON!s} {PERSON} {[PERSON]}"
    for value in ("张三", "11010519491231002X", "13800138000"):
        assert value not in shown


@pytest.mark.parametrize("suite", get_args(Suite))
def test_a_seal_opens_to_the_same_subject(suite: Suite) -> None:
    """What is sealed opens again, under either crypto suite."""
    token = PERSON.seal(MASTER, AAD, suite)
    assert Subject.open(MASTER, token, AAD) == PERSON


def test_the_seal_is_a_versioned_object() -> None:
    """The current format is a JSON object carrying its version (2) and named fields."""
    plaintext = json.loads(unseal(MASTER, SUBJECT_SEAL, PERSON.seal(MASTER, AAD), AAD))
    assert plaintext == {
        "v": 2,
        "real_name": "张三",
        "id_number": "11010519491231002X",
        "phone": "+8613800138000",
    }


def test_a_version_1_seal_still_opens() -> None:
    """A seal written before the format was versioned (a positional list) opens the same."""
    v1 = json.dumps(["张三", "11010519491231002X", "+8613800138000"], ensure_ascii=False)
    token = seal(MASTER, SUBJECT_SEAL, v1.encode(), AAD)
    assert Subject.open(MASTER, token, AAD) == PERSON


def test_a_seal_is_bound_to_its_row() -> None:
    """A seal moved to another verification does not open."""
    with pytest.raises(InvalidTag):
        Subject.open(MASTER, PERSON.seal(MASTER, AAD), b"ver_other")


@pytest.mark.parametrize(
    "content",
    [{"v": 3, "real_name": "张三"}, ["张三", "11010519491231002X"], {"v": 2}, [1, 2, 3], "x"],
)
def test_an_unknown_format_is_refused(content: object) -> None:
    """Content in no known format is an error, never a subject with missing fields."""
    token = seal(MASTER, SUBJECT_SEAL, json.dumps(content).encode(), AAD)
    with pytest.raises(SealFormatError):
        Subject.open(MASTER, token, AAD)


def test_the_fingerprint_is_the_positional_form() -> None:
    """The idempotency fingerprint is unchanged by the seal's format (the v1 list)."""
    assert json.loads(PERSON.fingerprint()) == ["张三", "11010519491231002X", "+8613800138000"]


def test_adult_on_comes_from_the_id_number() -> None:
    """The coming-of-age date is derived from the birth date in the ID number."""
    assert PERSON.adult_on == date(1967, 12, 31)
