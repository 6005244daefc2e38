"""The test vectors (ID numbers and mobile numbers, in vectors/) run against the parsers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.identity import BlindIndexer, InvalidField, parse_id_number, parse_phone

VECTORS = Path(__file__).resolve().parent / "vectors"
INDEXER = BlindIndexer({1: b"k" * 32}, current_version=1)


def load(name: str) -> list[tuple[str, str, str]]:
    """Return (input, expected, why) rows of a TSV vector file, skipping comments and blanks."""
    rows = []
    for line in (VECTORS / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            raw, expected, why = line.split("\t")
            rows.append((raw, expected, why))
    return rows


ID_ROWS = load("cn_resident_id.tsv")
PHONE_ROWS = load("cn_mobile.tsv")
INVALID_INPUTS = [("id", raw) for raw, exp, _ in ID_ROWS if exp == "invalid"] + [
    ("phone", raw) for raw, exp, _ in PHONE_ROWS if exp == "invalid"
]


def ids(rows: list[tuple[str, str, str]]) -> list[str]:
    """Use the 'why' column as the pytest id."""
    return [why for _, _, why in rows]


def test_vector_files_are_not_empty() -> None:
    """Both vector files yield rows, so the parametrised tests below cannot pass vacuously."""
    assert len(ID_ROWS) >= 11
    assert len(PHONE_ROWS) >= 8


@pytest.mark.parametrize(("raw", "expected", "why"), ID_ROWS, ids=ids(ID_ROWS))
def test_id_number_vector(raw: str, expected: str, why: str) -> None:
    """Each ID vector is accepted (possibly canonicalised to the same index) or refused."""
    if expected == "invalid":
        with pytest.raises(InvalidField) as info:
            parse_id_number(raw)
        assert (info.value.field, info.value.code) == ("id_number", "invalid_id_number")
    elif expected == "valid":
        assert parse_id_number(raw).value == raw
    else:
        canonical = expected.removeprefix("valid-same-as:")
        assert expected.startswith("valid-same-as:")
        value = parse_id_number(raw).value
        assert value == canonical
        assert INDEXER.compute("id_number", value) == INDEXER.compute("id_number", canonical)


@pytest.mark.parametrize(("raw", "expected", "why"), PHONE_ROWS, ids=ids(PHONE_ROWS))
def test_phone_vector(raw: str, expected: str, why: str) -> None:
    """Each phone vector canonicalises to its E.164 form or is refused."""
    if expected == "invalid":
        with pytest.raises(InvalidField) as info:
            parse_phone(raw)
        assert (info.value.field, info.value.code) == ("phone", "invalid_phone")
    else:
        assert parse_phone(raw) == expected


@pytest.mark.parametrize(("kind", "raw"), INVALID_INPUTS)
def test_error_detail_never_contains_the_input(kind: str, raw: str) -> None:
    """The detail of an InvalidField contains neither the input nor its digits-only form."""
    parse = parse_id_number if kind == "id" else parse_phone
    with pytest.raises(InvalidField) as info:
        parse(raw)
    detail = info.value.detail
    assert detail
    assert str(info.value) == detail
    assert raw not in detail
    assert re.sub(r"[^0-9]", "", raw) not in detail
