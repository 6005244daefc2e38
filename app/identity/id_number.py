"""Chinese resident identity numbers (GB 11643-1999, 18 characters)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from stdnum.cn import ric
from stdnum.exceptions import ValidationError

from app.identity.errors import InvalidField

__all__ = ["PROVINCE_CODES", "IdNumber", "parse_id_number"]

#: GB/T 2260 province-level prefixes. python-stdnum 2.2 knows all of these except 83 (used by
#: residence permits for Taiwan residents), which is added here. Only the province is checked:
#: county codes (digits 3-6) that were later abolished are still carried by living people.
PROVINCE_CODES: frozenset[str] = frozenset(
    {"11", "12", "13", "14", "15", "21", "22", "23"}
    | {"31", "32", "33", "34", "35", "36", "37"}
    | {"41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54"}
    | {"61", "62", "63", "64", "65", "71", "81", "82", "83"}
)

_EARLIEST_BIRTH_DATE = date(1900, 1, 1)
_ALLOWED_CHARS = re.compile(r"[0-9X]*")  # [0-9] is ASCII-only, unlike \d
_SHAPE = re.compile(r"[0-9]{17}[0-9X]")


@dataclass(frozen=True, repr=False)
class IdNumber:
    """A validated resident identity number.

    Attributes:
        value: The canonical 18-character number (ASCII digits, uppercase ``X``).
        birth_date: The birth date encoded in digits 7-14.
        province_code: The first two digits (GB/T 2260 province-level code).

    ``repr`` is redacted so the number cannot leak through logs or tracebacks.
    """

    value: str
    birth_date: date
    province_code: str

    @property
    def adult_on(self) -> date:
        """The date the holder turns 18 (29 February births: 1 March in non-leap years)."""
        year = self.birth_date.year + 18
        try:
            return self.birth_date.replace(year=year)
        except ValueError:
            return date(year, 3, 1)

    def __repr__(self) -> str:
        return "IdNumber(<redacted>)"


def _invalid(detail: str) -> InvalidField:
    return InvalidField("id_number", "invalid_id_number", detail)


def parse_id_number(raw: str, *, today: date | None = None) -> IdNumber:
    """Canonicalise and validate an 18-character resident identity number.

    Canonicalisation happens once, before any check: Unicode NFKC (full-width digits and the
    full-width X and x, U+FF38 and U+FF58, become ASCII), surrounding whitespace stripped,
    ``x`` uppercased. The result must then be exactly 17 ASCII digits followed by an ASCII
    digit or ``X``; digits of other scripts (Arabic-Indic, Devanagari, ...) are refused, not
    translated.

    Validation: correct ISO 7064 MOD 11-2 check character, a real calendar date in digits
    7-14 that is neither before 1900-01-01 nor after ``today``, and a known province-level
    prefix. The county code is deliberately not checked. The 15-digit pre-1999 format is
    refused rather than converted.

    Args:
        raw: The submitted text.
        today: Reference date for the "not in the future" rule; defaults to ``date.today()``.

    Returns:
        The validated :class:`IdNumber`.

    Raises:
        InvalidField: ``field="id_number"``, ``code="invalid_id_number"``, with a detail naming
            the failed rule. No other exception escapes for any ``str`` input.
    """
    value = unicodedata.normalize("NFKC", raw).strip().replace("x", "X")
    if not value:
        raise _invalid("The ID number must not be empty.")
    if not _ALLOWED_CHARS.fullmatch(value):
        raise _invalid(
            "The ID number may contain only the ASCII digits 0-9 and, as its final character, X."
        )
    if len(value) == 15 and "X" not in value:
        raise _invalid("15-digit numbers are not accepted; use the 18-digit number.")
    if len(value) != 18:
        raise _invalid("The ID number must be exactly 18 characters long.")
    if not _SHAPE.fullmatch(value):
        raise _invalid("X is only allowed as the final (check) character of the ID number.")
    try:
        check_ok = ric.calc_check_digit(value) == value[-1]
    except (ValidationError, ValueError):
        check_ok = False
    if not check_ok:
        raise _invalid("The check character (last character) of the ID number is wrong.")
    try:
        birth_date = ric.get_birth_date(value)
    except (ValidationError, ValueError):
        raise _invalid("Digits 7-14 of the ID number are not a real calendar date.") from None
    if birth_date > (date.today() if today is None else today):
        raise _invalid("The birth date in the ID number is in the future.")
    if birth_date < _EARLIEST_BIRTH_DATE:
        raise _invalid("The birth date in the ID number is before 1900.")
    if value[:2] not in PROVINCE_CODES:
        raise _invalid("The first two digits of the ID number are not a known province code.")
    return IdNumber(value=value, birth_date=birth_date, province_code=value[:2])
