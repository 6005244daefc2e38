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


#: Default_Ignorable_Code_Point (Unicode DerivedCoreProperties): invisible when rendered, so a
#: name holding one looks like another name, or like nothing at all. Hangul fillers included.
_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
    "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
#: Combining marks a Latin letter may carry (tone marks of pinyin, accents): U+0300-U+036F.
_LATIN_MARKS = range(0x300, 0x370)
#: Latin letters of the Basic Latin, Latin-1, Extended-A/B and Extended Additional blocks.
_LATIN_BLOCKS = (range(0x41, 0x250), range(0x1E00, 0x1F00))


def _is_han(ch: str) -> bool:
    """A unified CJK ideograph (any extension block this Python's Unicode database knows).
    NFC has already mapped the compatibility ideographs that are not themselves unified."""
    return unicodedata.name(ch, "").startswith(
        ("CJK UNIFIED IDEOGRAPH-", "CJK COMPATIBILITY IDEOGRAPH-")
    )


def _is_latin_letter(ch: str) -> bool:
    return (
        any(ord(ch) in block for block in _LATIN_BLOCKS)
        and unicodedata.category(ch)[0] == "L"
        and unicodedata.name(ch, "").startswith("LATIN ")
    )


def parse_name(raw: str) -> str:
    """Canonicalise and validate a real name.

    Canonicalisation happens once, before any check: Unicode NFC, surrounding whitespace
    stripped, middle-dot look-alikes (U+30FB, U+FF65, U+2022, U+2027, U+2219, U+22C5) mapped to
    U+00B7, and runs of ASCII spaces collapsed to one.

    The repertoire is defined positively. A name is 1 to 64 code points written in **one**
    script:

    - Han: unified CJK ideographs, with U+00B7 between the parts of a transliterated
      minority or foreign name (阿依古丽·买买提);
    - Latin, as on resident documents of foreign nationals and in pinyin: Latin letters
      (U+0041-U+024F, U+1E00-U+1EFF), each optionally followed by combining accents
      (U+0300-U+036F), words separated by single ASCII spaces or by U+00B7.

    Everything else is refused: mixed scripts (a Cyrillic letter among Latin ones, Latin among
    Han), other letters (Hangul fillers, Greek, Cyrillic...), default-ignorable characters
    (zero-width, variation selectors, CGJ, bidi controls, BOM), digits, other punctuation,
    symbols and spaces, control, private-use, surrogate and unassigned code points.

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
    scripts: set[str] = set()
    base = ""  # the letter the current run of combining marks belongs to ("" if none)
    for i, ch in enumerate(name):
        category = unicodedata.category(ch)
        if _IGNORABLE.match(ch):
            raise _invalid(_CATEGORY_DETAILS["Cf"])
        if _is_han(ch):
            scripts.add("Han")
            base = ""  # Han takes no combining marks
            word = True
        elif _is_latin_letter(ch):
            scripts.add("Latin")
            base = ch
            word = True
        else:
            word = False
        if word:
            continue
        if category.startswith("M"):
            if not base or ord(ch) not in _LATIN_MARKS:
                raise _invalid("A combining mark in the name must be an accent on a Latin letter.")
        elif ch == MIDDLE_DOT:
            prev, nxt = name[i - 1] if i else "", name[i + 1] if i + 1 < len(name) else ""
            if not (prev and nxt) or not _is_part(prev) or not _is_part(nxt, start=True):
                raise _invalid("The middle dot must stand between two parts of the name.")
            base = ""
        elif ch == " ":
            if not (base and _is_latin_letter(name[i + 1])):
                raise _invalid("Spaces are only allowed between words written in Latin letters.")
            base = ""
        elif category.startswith("L"):
            raise _invalid(
                "The name must be written in Han characters or in Latin letters"
                " (other scripts and filler characters are not accepted)."
            )
        else:
            detail = _CATEGORY_DETAILS.get(category) or _CATEGORY_DETAILS.get(category[0])
            raise _invalid(detail or _OTHER_DETAIL)
    if len(scripts) > 1:
        raise _invalid("The name must be written in one script: Han characters or Latin letters.")
    return name


def _is_part(ch: str, *, start: bool = False) -> bool:
    """Whether ``ch`` may stand next to a middle dot (a letter, or an accent ending a word)."""
    if _is_han(ch) or _is_latin_letter(ch):
        return True
    return not start and ord(ch) in _LATIN_MARKS
