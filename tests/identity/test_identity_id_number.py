"""Resident identity number parsing beyond the shared vectors."""

from __future__ import annotations

from datetime import date

import pytest

from app.identity import IdNumber, InvalidField, parse_id_number

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def with_check(body: str) -> str:
    """Append the GB 11643 check character to a 17-digit body (independent of stdnum)."""
    remainder = sum(int(d) * w for d, w in zip(body, WEIGHTS, strict=True)) % 11
    return body + "10X98765432"[remainder]


def fullwidth(text: str) -> str:
    """Map ASCII digits and letters to their full-width forms (U+FF10 and up)."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def arabic_indic(digits: str) -> str:
    """Map ASCII digits to Arabic-Indic digits (U+0660-U+0669), which str.isdigit accepts."""
    return "".join(chr(0x0660 + int(d)) for d in digits)


def refusal(raw: str, **kwargs: date) -> str:
    """Parse an ID that must be refused and return the error detail."""
    with pytest.raises(InvalidField) as info:
        parse_id_number(raw, **kwargs)
    assert (info.value.field, info.value.code) == ("id_number", "invalid_id_number")
    return info.value.detail


def test_check_helper_matches_annex_example() -> None:
    """The test's own check-character helper reproduces the GB 11643 annex example."""
    assert with_check("11010519491231002") == "11010519491231002X"


def test_full_width_digits_are_canonicalised() -> None:
    """Full-width digits and full-width X are accepted and mapped to ASCII."""
    assert parse_id_number(fullwidth("11010519491231002X")).value == "11010519491231002X"


def test_full_width_lowercase_x_is_canonicalised() -> None:
    """A full-width lowercase x becomes an ASCII uppercase X."""
    assert parse_id_number("11010519491231002" + fullwidth("x")).value == "11010519491231002X"


def test_surrounding_whitespace_is_stripped() -> None:
    """Leading and trailing whitespace (including an ideographic space) is removed."""
    assert parse_id_number("\u3000 440305199003071236\n").value == "440305199003071236"


def test_parsed_fields() -> None:
    """The birth date and province code are extracted from the number."""
    parsed = parse_id_number("440305199003071236")
    assert parsed.birth_date == date(1990, 3, 7)
    assert parsed.province_code == "44"


def test_arabic_indic_digits_are_refused() -> None:
    """Arabic-Indic digits (which str.isdigit accepts) are refused, not translated."""
    assert "ASCII digits" in refusal(arabic_indic("11010519491231002") + "X")


def test_internal_space_is_refused() -> None:
    """Separators inside the number are not silently removed."""
    assert "ASCII digits" in refusal("110105 19491231002X")


def test_x_in_the_middle_is_refused() -> None:
    """X is only allowed as the final check character."""
    assert "final" in refusal("1101051949123100X2")


def test_empty_is_refused() -> None:
    """An empty or whitespace-only value is refused."""
    assert "empty" in refusal("   ")


def test_fifteen_digit_format_is_refused_with_explanation() -> None:
    """The pre-1999 15-digit format is refused with a pointer to the 18-digit number."""
    detail = refusal("110105491231002")
    assert detail == "15-digit numbers are not accepted; use the 18-digit number."


def test_wrong_check_character_detail() -> None:
    """A wrong check character is reported as such."""
    assert "check character" in refusal("110105194912310021")


def test_impossible_date_with_correct_check_is_refused() -> None:
    """30 February is refused even with a correct check character."""
    assert "calendar date" in refusal(with_check("11010519900230001"))


def test_future_birth_date_is_refused() -> None:
    """A birth date after `today` is refused."""
    raw = with_check("11010520300101001")
    assert "future" in refusal(raw, today=date(2025, 1, 1))


def test_birth_date_equal_to_today_is_accepted() -> None:
    """A birth date of exactly `today` is not in the future."""
    raw = with_check("11010520250101001")
    assert parse_id_number(raw, today=date(2025, 1, 1)).birth_date == date(2025, 1, 1)


def test_birth_date_before_1900_is_refused() -> None:
    """Birth dates before 1900-01-01 are refused."""
    assert "1900" in refusal(with_check("11010518991231001"))


@pytest.mark.parametrize("province", ["00", "99", "10", "72", "84"])
def test_unknown_province_is_refused(province: str) -> None:
    """A prefix that is not a province-level code is refused even with a valid check character."""
    assert "province" in refusal(with_check(province + "010519800101001"))


@pytest.mark.parametrize("province", ["71", "81", "82", "83"])
def test_taiwan_hong_kong_macau_prefixes_are_accepted(province: str) -> None:
    """71, 81, 82 and 83 (residence-permit prefixes) are known provinces."""
    assert parse_id_number(with_check(province + "000019800101001")).province_code == province


def test_abolished_county_code_is_accepted() -> None:
    """A holder of 110103 (Beijing Chongwen, abolished 2010) born in 1985 is accepted."""
    assert parse_id_number(with_check("11010319850101001")).value.startswith("110103")


def test_county_code_newer_than_birth_year_is_accepted() -> None:
    """410101 (listed from 1983) is accepted for a 1980 birth: only the province is checked."""
    assert parse_id_number(with_check("41010119800101001")).birth_date.year == 1980


def test_leap_day_adult_on() -> None:
    """A 29 February birth comes of age on 1 March (the 18th birthday year is never leap)."""
    assert parse_id_number("310104200002290030").adult_on == date(2018, 3, 1)


def test_ordinary_adult_on() -> None:
    """An ordinary birth date comes of age on the 18th anniversary."""
    assert parse_id_number("440305199003071236").adult_on == date(2008, 3, 7)


def test_repr_is_redacted() -> None:
    """Neither repr nor str reveals the number."""
    parsed = parse_id_number("440305199003071236")
    assert repr(parsed) == "IdNumber(<redacted>)"
    assert "440305" not in str(parsed)


def test_id_number_is_frozen() -> None:
    """IdNumber instances are immutable."""
    parsed = parse_id_number("440305199003071236")
    with pytest.raises(AttributeError):
        parsed.value = "x"  # type: ignore[misc]
    assert isinstance(parsed, IdNumber)
