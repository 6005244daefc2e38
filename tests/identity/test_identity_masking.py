"""Display masks."""

from __future__ import annotations

import pytest

from app.identity import mask_id_number, mask_name, mask_phone


@pytest.mark.parametrize(
    ("name", "masked"),
    [("张三", "张*"), ("张三丰", "张**"), ("阿依古丽·买买提", "阿*******"), ("张", "*")],
)
def test_mask_name(name: str, masked: str) -> None:
    """Names keep their first character only; a one-character name is fully masked."""
    assert mask_name(name) == masked


def test_mask_id_number() -> None:
    """ID numbers keep the first 6 and last 4 characters."""
    assert mask_id_number("11010519491231002X") == "110105********002X"


def test_mask_phone() -> None:
    """Phones show the national number's first 3 and last 4 digits."""
    assert mask_phone("+8613800138000") == "138****8000"


def test_mask_id_number_rejects_non_canonical_input() -> None:
    """Masking refuses a value that is not 18 characters."""
    with pytest.raises(ValueError, match="18-character"):
        mask_id_number("110105491231002")


def test_mask_phone_rejects_non_canonical_input() -> None:
    """Masking refuses a value that is not a +86 E.164 mobile number."""
    with pytest.raises(ValueError, match=r"E\.164"):
        mask_phone("13800138000")
