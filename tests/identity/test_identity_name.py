"""Real name canonicalisation and validation."""

from __future__ import annotations

import pytest

from app.identity import InvalidField, parse_name


def refusal(raw: str) -> str:
    """Parse a name that must be refused and return the error detail."""
    with pytest.raises(InvalidField) as info:
        parse_name(raw)
    assert (info.value.field, info.value.code) == ("real_name", "invalid_real_name")
    if raw.strip():
        assert raw.strip() not in info.value.detail
    return info.value.detail


def test_chinese_name() -> None:
    """A plain CJK name is accepted unchanged."""
    assert parse_name("张三") == "张三"


def test_single_character_name() -> None:
    """A one-character name is accepted."""
    assert parse_name("张") == "张"


def test_minority_name_with_middle_dot() -> None:
    """A transliterated name with U+00B7 is accepted unchanged."""
    assert parse_name("阿依古丽·买买提") == "阿依古丽·买买提"


@pytest.mark.parametrize("dot", ["\u30fb", "\uff65", "\u2022", "\u2027", "\u2219", "\u22c5"])
def test_look_alike_dots_canonicalise_to_middle_dot(dot: str) -> None:
    """Look-alike dots are mapped to U+00B7."""
    assert parse_name(f"阿依古丽{dot}买买提") == "阿依古丽\u00b7买买提"


def test_extension_b_ideographs_are_accepted() -> None:
    """CJK Extension B ideographs (outside the BMP) are letters."""
    assert parse_name("王\U00020000") == "王\U00020000"


def test_nfc_normalisation() -> None:
    """A decomposed accent is composed (NFC)."""
    assert parse_name("Jose\u0301") == "José"


def test_combining_mark_after_letter_is_accepted() -> None:
    """A combining mark without a precomposed form is kept after its letter."""
    assert parse_name("q\u0307") == "q\u0307"


def test_leading_combining_mark_is_refused() -> None:
    """A combining mark must follow a letter."""
    assert "combining" in refusal("\u0301张三")


def test_latin_name_with_space() -> None:
    """Latin-script words separated by a space are accepted."""
    assert parse_name("John Smith") == "John Smith"


def test_space_runs_are_collapsed() -> None:
    """Runs of spaces between Latin words collapse to one, surrounding whitespace goes."""
    assert parse_name("  John   Smith \t") == "John Smith"


def test_space_between_cjk_characters_is_refused() -> None:
    """Spaces are only allowed between Latin-script words."""
    assert "Latin" in refusal("张 三")


def test_fifty_characters_accepted() -> None:
    """A 50-character name is accepted."""
    assert len(parse_name("张" * 50)) == 50


def test_sixty_four_characters_accepted() -> None:
    """64 characters is the upper bound."""
    assert len(parse_name("张" * 64)) == 64


def test_sixty_five_characters_refused() -> None:
    """65 characters is too long."""
    assert "64" in refusal("张" * 65)


def test_empty_is_refused() -> None:
    """An empty or whitespace-only name is refused."""
    assert "empty" in refusal(" \u3000 ")


@pytest.mark.parametrize("raw", ["·张三", "张三·", "张··三", "John · Smith"])
def test_misplaced_middle_dot_is_refused(raw: str) -> None:
    """The middle dot may not be first, last, doubled or next to a space."""
    refusal(raw)


def test_zero_width_joiner_is_refused() -> None:
    """U+200D ZERO WIDTH JOINER is refused."""
    assert "invisible" in refusal("张\u200d三")


@pytest.mark.parametrize(
    "ch", ["\u202a", "\u202e", "\u2066", "\u2069", "\u200b", "\ufeff", "\u2060"]
)
def test_format_characters_are_refused(ch: str) -> None:
    """Bidi controls, zero-width characters, BOM and word joiner are refused."""
    assert "invisible" in refusal(f"张{ch}三")


def test_right_to_left_override_is_refused() -> None:
    """U+202E RIGHT-TO-LEFT OVERRIDE is refused."""
    refusal("\u202e张三")


@pytest.mark.parametrize("raw", ["张3", "张\u0663", "张三\uff11"])
def test_digits_are_refused(raw: str) -> None:
    """Digits of any script are refused."""
    assert "digits" in refusal(raw)


def test_control_character_is_refused() -> None:
    """A C0 control character is refused."""
    assert "control" in refusal("张\x07三")


@pytest.mark.parametrize("raw", ["张-三", "O'Brien", "张,三", "张.三", "张\u00a0三", "张😀"])
def test_punctuation_symbols_and_other_spaces_are_refused(raw: str) -> None:
    """Punctuation other than the middle dot, symbols and non-ASCII spaces are refused."""
    refusal(raw)


def test_private_use_is_refused() -> None:
    """Private-use code points are refused."""
    assert "private" in refusal("张\ue000")


def test_surrogate_is_refused() -> None:
    """A lone surrogate is refused."""
    assert "surrogate" in refusal("张\ud800")


def test_unassigned_is_refused() -> None:
    """An unassigned code point is refused."""
    assert "unassigned" in refusal("张\U0003ffff")
