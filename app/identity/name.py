"""Real names as written on identity documents."""

from __future__ import annotations

import re
import unicodedata

from app.identity.errors import InvalidField

__all__ = ["MAX_NAME_LENGTH", "MIDDLE_DOT", "parse_name"]

MAX_NAME_LENGTH = 64
#: The canonical separator in transliterated minority and foreign names (e.g. 阿依古丽·买买提).
MIDDLE_DOT = "\u00b7"
_DOT_LOOKALIKES = str.maketrans(dict.fromkeys("\u30fb\uff65\u2022\u2027\u2219\u22c5", MIDDLE_DOT))
_SPACE_RUNS = re.compile(" {2,}")

_CATEGORY_DETAILS = {
    "N": "The name must not contain digits.",
    "Cc": "The name must not contain control characters.",
    "Cf": "The name must not contain invisible formatting characters.",
    "Co": "The name must not contain private-use characters.",
    "Cs": "The name must not contain surrogate code points.",
    "Cn": "The name must not contain unassigned code points.",
}
_OTHER_DETAIL = (
    "The name must not contain punctuation, symbols or spacing other than the middle dot."
)


def _invalid(detail: str) -> InvalidField:
    return InvalidField("real_name", "invalid_real_name", detail)


def _is_latin_letter(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith("LATIN ") and unicodedata.category(ch)[0] == "L"


def parse_name(raw: str) -> str:
    """Canonicalise and validate a real name.

    Canonicalisation happens once, before any check: Unicode NFC, surrounding whitespace
    stripped, middle-dot look-alikes (U+30FB, U+FF65, U+2022, U+2027, U+2219, U+22C5) mapped to
    U+00B7, and runs of ASCII spaces collapsed to one.

    Allowed afterwards, 1 to 64 code points of: letters (``L*``, including all CJK ideograph
    blocks known to this Python's Unicode database); combining marks (``M*``) directly after a
    letter or another such mark; U+00B7 between two name parts (not first, last or doubled);
    and single ASCII spaces between Latin-script words. Everything else is refused: digits,
    other punctuation and symbols, other whitespace, control and format characters (bidi
    controls, zero-width characters, BOM), private-use, surrogate and unassigned code points.

    Args:
        raw: The submitted text.

    Returns:
        The canonical NFC name.

    Raises:
        InvalidField: ``field="real_name"``, ``code="invalid_real_name"``, with a detail naming
            the failed rule (never the name).
    """
    name = unicodedata.normalize("NFC", raw).strip().translate(_DOT_LOOKALIKES)
    name = _SPACE_RUNS.sub(" ", name)
    if not name:
        raise _invalid("The name must not be empty.")
    if len(name) > MAX_NAME_LENGTH:
        raise _invalid(f"The name must be at most {MAX_NAME_LENGTH} characters long.")
    base = ""  # the letter the current run of combining marks belongs to ("" if none)
    for i, ch in enumerate(name):
        category = unicodedata.category(ch)
        if category.startswith("L"):
            base = ch
        elif category.startswith("M"):
            if not base:
                raise _invalid("A combining mark in the name must follow a letter.")
        elif ch == MIDDLE_DOT:
            if i == 0 or i == len(name) - 1 or not base:
                raise _invalid("The middle dot must stand between two parts of the name.")
            base = ""
        elif ch == " ":
            if not (base and _is_latin_letter(base) and _is_latin_letter(name[i + 1])):
                raise _invalid("Spaces are only allowed between words written in Latin letters.")
            base = ""
        else:
            detail = _CATEGORY_DETAILS.get(category) or _CATEGORY_DETAILS.get(category[0])
            raise _invalid(detail or _OTHER_DETAIL)
    return name
