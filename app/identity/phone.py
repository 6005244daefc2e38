"""Mainland China mobile numbers, canonicalised to E.164."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from app.identity.errors import InvalidField

__all__ = ["parse_phone"]

_ALLOWED = re.compile(r"\+?[0-9]+")  # [0-9] is ASCII-only, unlike \d
# The accepted spellings: national, +86, 0086 or 86 followed by an 11-digit number starting 1.
_SHAPE = re.compile(r"(?:\+86|0086|86)?(1[0-9]{10})")
_MOBILE_TYPES = frozenset(
    {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
)


def _invalid(detail: str) -> InvalidField:
    return InvalidField("phone", "invalid_phone", detail)


def parse_phone(raw: str) -> str:
    """Canonicalise and validate a mainland China mobile number.

    Canonicalisation happens once, before any check: Unicode NFKC (full-width digits and the
    full-width plus U+FF0B become ASCII), surrounding whitespace stripped, and internal spaces
    and hyphens removed.
    What remains must be an optional leading ``+`` and ASCII digits only; digits of other
    scripts are refused. Accepted spellings are ``13800138000``, ``+8613800138000``,
    ``008613800138000`` and ``8613800138000``. The number is then parsed with ``phonenumbers``
    (default region ``CN``) and must have country code 86 and number type ``MOBILE`` (or
    ``FIXED_LINE_OR_MOBILE``).

    Args:
        raw: The submitted text.

    Returns:
        The E.164 form, e.g. ``"+8613800138000"``.

    Raises:
        InvalidField: ``field="phone"``, ``code="invalid_phone"``, with a detail naming the
            failed rule (never the number).
    """
    value = unicodedata.normalize("NFKC", raw).strip().replace(" ", "").replace("-", "")
    if not value:
        raise _invalid("The phone number must not be empty.")
    if not _ALLOWED.fullmatch(value):
        raise _invalid(
            "The phone number may contain only ASCII digits, an optional leading +, "
            "spaces and hyphens."
        )
    try:
        number = phonenumbers.parse(value, "CN")
    except phonenumbers.NumberParseException:
        raise _invalid("The phone number could not be parsed.") from None
    if number.country_code != 86:
        raise _invalid("The phone number must be a mainland China (+86) number.")
    shape = _SHAPE.fullmatch(value)
    if shape is None or str(number.national_number) != shape.group(1):
        raise _invalid(
            "The phone number must be an 11-digit mainland China mobile number starting with 1, "
            "optionally prefixed with +86, 0086 or 86."
        )
    if not phonenumbers.is_valid_number(number) or (
        phonenumbers.number_type(number) not in _MOBILE_TYPES
    ):
        raise _invalid("The phone number is not a valid mainland China mobile number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
