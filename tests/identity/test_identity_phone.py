"""Mainland mobile number parsing beyond the shared vectors."""

from __future__ import annotations

import pytest

from app.identity import InvalidField, parse_phone


def fullwidth(text: str) -> str:
    """Map ASCII digits and + to their full-width forms (U+FF0B, U+FF10 and up)."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def refusal(raw: str) -> str:
    """Parse a phone number that must be refused and return the error detail."""
    with pytest.raises(InvalidField) as info:
        parse_phone(raw)
    assert (info.value.field, info.value.code) == ("phone", "invalid_phone")
    return info.value.detail


def test_country_code_without_plus() -> None:
    """86 followed by an 11-digit mobile number is accepted."""
    assert parse_phone("8613800138000") == "+8613800138000"


def test_full_width_digits_and_plus() -> None:
    """Full-width digits and the full-width plus sign are mapped to ASCII."""
    assert parse_phone(fullwidth("+8613800138000")) == "+8613800138000"


def test_spaces_and_hyphens_are_separators() -> None:
    """Internal spaces and hyphens are removed."""
    assert parse_phone(" +86 138-0013-8000 ") == "+8613800138000"


def test_arabic_indic_digits_are_refused() -> None:
    """Arabic-Indic digits are refused, not translated."""
    assert "ASCII digits" in refusal("".join(chr(0x0660 + int(d)) for d in "13800138000"))


def test_other_separators_are_refused() -> None:
    """Parentheses and dots are not accepted separators."""
    assert "ASCII digits" in refusal("(138) 0013.8000")


def test_landline_is_refused() -> None:
    """A Beijing landline in E.164 form is refused."""
    refusal("+861012345678")


def test_trunk_prefix_zero_is_refused() -> None:
    """A leading national trunk prefix 0 is not one of the accepted spellings."""
    refusal("013800138000")


def test_foreign_number_detail_mentions_mainland() -> None:
    """A foreign number is refused as not being a +86 number."""
    assert "+86" in refusal("+85291234567")


def test_unassigned_mobile_range_is_refused() -> None:
    """A well-formed 11-digit number in an unassigned range is refused by phonenumbers."""
    assert "valid" in refusal("14012345678")


def test_empty_is_refused() -> None:
    """An empty value is refused."""
    assert "empty" in refusal(" - ")
