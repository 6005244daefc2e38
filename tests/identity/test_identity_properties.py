"""Property-based tests of the ID number parser."""

from __future__ import annotations

import contextlib
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from app.identity import InvalidField, parse_id_number
from app.identity.id_number import PROVINCE_CODES

# ASCII and full-width digits and X, Arabic-Indic digits, x, and a space.
DIGIT_LIKE = "0123456789Xx \uff38" + "".join(chr(0xFF10 + i) + chr(0x0660 + i) for i in range(10))
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
TODAY = date(2025, 6, 1)
# database=None keeps hypothesis from writing a .hypothesis directory into the repository.
SETTINGS = settings(database=None, max_examples=300, deadline=None)


def check_character(body: str) -> str:
    """The GB 11643 check character for a 17-digit body."""
    return "10X98765432"[sum(int(d) * w for d, w in zip(body, WEIGHTS, strict=True)) % 11]


@SETTINGS
@given(
    province=st.sampled_from(sorted(PROVINCE_CODES)),
    county=st.integers(0, 9999),
    birth=st.dates(min_value=date(1900, 1, 1), max_value=TODAY),
    sequence=st.integers(0, 999),
)
def test_valid_bodies_with_computed_check_round_trip(
    province: str, county: int, birth: date, sequence: int
) -> None:
    """Any valid body plus its computed check character parses and round-trips."""
    body = f"{province}{county:04d}{birth:%Y%m%d}{sequence:03d}"
    raw = body + check_character(body)
    parsed = parse_id_number(raw, today=TODAY)
    assert parsed.value == raw
    assert parsed.birth_date == birth
    assert parsed.province_code == province
    assert parse_id_number(parsed.value, today=TODAY) == parsed


@SETTINGS
@given(st.text())
def test_arbitrary_text_only_raises_invalid_field(raw: str) -> None:
    """parse_id_number raises nothing but InvalidField for arbitrary text."""
    with contextlib.suppress(InvalidField):
        parse_id_number(raw, today=TODAY)


@SETTINGS
@given(st.text(alphabet=DIGIT_LIKE, min_size=14, max_size=20))
def test_digit_heavy_text_only_raises_invalid_field(raw: str) -> None:
    """Digit-heavy text (reaching the check and date stages) raises only InvalidField."""
    with contextlib.suppress(InvalidField):
        parse_id_number(raw, today=TODAY)
