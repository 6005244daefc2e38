"""Integrators' user ids: never a person's ID number or phone number in disguise.

``external_user_id`` is stored and shown as sent (it is how a client finds its user), so it
must not carry personal data: a value that is, or contains, something shaped like a resident
ID number (18 characters, or the old 15 digits, with a known province code and a real birth
date; the check character is not needed to recognise one) or a mainland mobile number is
refused, whatever the spacing, hyphens or full-width digits.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

from app.identity.errors import InvalidField
from app.identity.id_number import PROVINCE_CODES, parse_id_number
from app.identity.phone import parse_phone

__all__ = ["check_external_user_id"]

#: Runs of digits, possibly broken by spaces, hyphens or dots, possibly ending in X.
_RUN = re.compile(r"[0-9](?:[0-9 .\-]*[0-9])?[Xx]?")
_SEPARATORS = re.compile(r"[ .\-]")


def _invalid(detail: str) -> InvalidField:
    return InvalidField("external_user_id", "invalid_external_user_id", detail)


def _is_date(text: str) -> bool:
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return True


def _looks_like_id_number(digits: str) -> bool:
    if digits[:2] not in PROVINCE_CODES:
        return False
    if len(digits) == 18 and digits[:17].isdigit():
        return 1900 <= int(digits[6:10]) <= date.today().year and _is_date(digits[6:14])
    if len(digits) == 15 and digits.isdigit():
        return _is_date("19" + digits[6:12])
    return False


def _is_phone(digits: str) -> bool:
    try:
        parse_phone(digits)
    except InvalidField:
        return False
    return True


def check_external_user_id(raw: str) -> str:
    """Return ``raw`` unchanged, or refuse it when it holds an ID number or a phone number.

    Raises:
        InvalidField: ``field="external_user_id"``, ``code="invalid_external_user_id"``, with a
            detail saying which kind of personal data it looks like (never the value).
    """
    try:
        parse_id_number(raw)
    except InvalidField:
        pass
    else:
        raise _invalid("The external user id must not be a resident ID number.")
    if _is_phone(raw):
        raise _invalid("The external user id must not be a phone number.")
    text = unicodedata.normalize("NFKC", raw)
    for match in _RUN.finditer(text):
        digits = _SEPARATORS.sub("", match.group()).upper()
        if _looks_like_id_number(digits):
            raise _invalid("The external user id must not contain a resident ID number.")
        if 11 <= len(digits) <= 15 and _is_phone(digits):
            raise _invalid("The external user id must not contain a phone number.")
    return raw
