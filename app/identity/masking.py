"""Display masks, computed once at intake from canonical values."""

from __future__ import annotations

__all__ = ["mask_id_number", "mask_name", "mask_phone"]


def mask_name(name: str) -> str:
    """Keep the first character of a canonical name and replace every other one with ``*``.

    ``张三`` -> ``张*``, ``阿依古丽·买买提`` -> ``阿*******``; a one-character name becomes ``*``.
    """
    if len(name) <= 1:
        return "*" * len(name)
    return name[0] + "*" * (len(name) - 1)


def mask_id_number(value: str) -> str:
    """Mask a canonical 18-character ID number: first 6, eight ``*``, last 4.

    ``11010519491231002X`` -> ``110105********002X``.

    Raises:
        ValueError: ``value`` is not 18 characters long.
    """
    if len(value) != 18:
        raise ValueError("expected a canonical 18-character ID number")
    return value[:6] + "*" * 8 + value[-4:]


def mask_phone(e164: str) -> str:
    """Mask a canonical +86 E.164 mobile number as national digits: first 3, ``****``, last 4.

    ``+8613800138000`` -> ``138****8000``.

    Raises:
        ValueError: ``e164`` is not ``+86`` followed by 11 digits.
    """
    if len(e164) != 14 or not e164.startswith("+86"):
        raise ValueError("expected a canonical +86 E.164 mobile number")
    national = e164[3:]
    return national[:3] + "****" + national[-4:]
