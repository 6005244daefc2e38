"""Unique, valid test identities: resident ID numbers (GB 11643), mainland mobiles, names.

The service refuses the same person twice per client and limits SMS per phone, so every
registration in a run needs a person of its own.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import date, timedelta

#: GB/T 2260 province-level prefixes the service accepts (``app.identity.PROVINCE_CODES``).
PROVINCES: tuple[str, ...] = (
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
    "65",
)  # fmt: skip
#: GB 11643 weights of the first 17 digits.
WEIGHTS: tuple[int, ...] = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
#: Check character for each remainder mod 11.
CHECK_CHARS = "10X98765432"

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
)
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂兰文华玉萍红建国志宏海波鹏辉斌宇浩凯晨"
#: The shipped mock fixture's people: a random number never equals one, but be explicit.
_KNOWN_PEOPLE = frozenset({"110101198001010010", "320102199211200023", "510104197506300047"})
_FIRST_BIRTH = date(1950, 1, 1)
_BIRTH_SPAN_DAYS = (date(2005, 12, 31) - _FIRST_BIRTH).days


def check_char(first17: str) -> str:
    """The GB 11643 (ISO 7064 MOD 11-2) check character of 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("need exactly 17 ASCII digits")
    return CHECK_CHARS[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


@dataclass(frozen=True, slots=True)
class Person:
    external_user_id: str
    real_name: str
    id_number: str
    phone: str


class People:
    """Draws people no earlier draw of this instance has used (ID number, phone, user id)."""

    def __init__(self, seed: int | None = None, prefix: str = "bench") -> None:
        self._rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
        self._ids: set[str] = set()
        self._phones: set[str] = set()
        self._prefix = prefix
        self._count = 0

    def id_number(self) -> str:
        rng = self._rng
        while True:
            born = _FIRST_BIRTH + timedelta(days=rng.randrange(_BIRTH_SPAN_DAYS + 1))
            first17 = (
                rng.choice(PROVINCES)
                + f"{rng.randrange(10_000):04d}"
                + born.strftime("%Y%m%d")
                + f"{rng.randrange(1000):03d}"
            )
            value = first17 + check_char(first17)
            if value not in self._ids and value not in _KNOWN_PEOPLE:
                self._ids.add(value)
                return value

    def phone(self) -> str:
        while True:
            value = f"139{self._rng.randrange(100_000_000):08d}"
            if value not in self._phones:
                self._phones.add(value)
                return value

    def name(self) -> str:
        rng = self._rng
        return rng.choice(_SURNAMES) + "".join(rng.choices(_GIVEN, k=rng.choice((1, 2))))

    def person(self) -> Person:
        self._count += 1
        # Underscores keep the counter and the random part apart: digits joined by hyphens can
        # read as a phone number, which the service refuses in an external_user_id.
        return Person(
            external_user_id=f"{self._prefix}_{self._count}_{self._rng.getrandbits(32):08x}",
            real_name=self.name(),
            id_number=self.id_number(),
            phone=self.phone(),
        )


def registration_body(person: Person, level: str, policy_version: str = "2026-01") -> bytes:
    """The JSON body of ``POST /v1/verifications`` for ``person`` at ``level``."""
    return json.dumps(
        {
            "external_user_id": person.external_user_id,
            "real_name": person.real_name,
            "id_number": person.id_number,
            "phone": person.phone,
            "consent": {"policy_version": policy_version},
            "level": level,
        },
        ensure_ascii=False,
    ).encode()
