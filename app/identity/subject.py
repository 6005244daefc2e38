"""The person a verification is about: their canonical identity fields, and how they are sealed.

A :class:`Subject` exists in memory only: from intake (``canonicalise``) to the sealed copy a
pending verification keeps for its checks and code, and from that copy back to the verifiers
and the SMS. Its ``repr`` and ``str`` are redacted, so a stray log line or traceback never
prints a value.

The sealed copy is encrypted under the ``subject-seal/v1`` purpose key (``app.crypto.seal``:
AES-256-GCM or SM4-GCM, bound to its verification's id). What is encrypted is versioned:

- version 2 (written now): a JSON object ``{"v": 2, "real_name": …, "id_number": …,
  "phone": …}``;
- version 1 (written before): the positional JSON list ``[real_name, id_number, phone]``.

:meth:`Subject.open` reads both, so verifications sealed before the change still run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from app.crypto import DEFAULT_SUITE, Suite, seal, unseal
from app.identity.id_number import parse_id_number

__all__ = ["FORMAT_VERSION", "SUBJECT_SEAL", "SealFormatError", "Subject"]

#: The purpose the sealing key is derived for. It names the key, not the format: it stays the
#: same across format versions (and ``realname reindex`` reseals under it).
SUBJECT_SEAL = "subject-seal/v1"
#: The format :meth:`Subject.seal` writes.
FORMAT_VERSION = 2


class SealFormatError(ValueError):
    """A sealed subject opened, but what it held is in no known format (a bug, never input)."""


@dataclass(frozen=True, slots=True)
class Subject:
    """The canonical identity fields of one person: an NFC name, the 18-character resident ID
    number with an uppercase ``X``, an E.164 phone. ``repr`` and ``str`` are redacted."""

    real_name: str
    id_number: str
    phone: str

    def __repr__(self) -> str:
        return "Subject(<redacted>)"

    __str__ = __repr__

    @property
    def adult_on(self) -> date:
        """The date the person turns 18, from the birth date in the ID number."""
        return parse_id_number(self.id_number).adult_on

    def fingerprint(self) -> str:
        """The fields as one string, for an Idempotency-Key fingerprint (keyed-hashed, never
        stored as is). Unchanged by the seal's format version, so a retry matches across it."""
        return _encode_v1(self)

    def seal(self, master: bytes, aad: bytes, suite: Suite = DEFAULT_SUITE) -> str:
        """Encrypt the fields (format version 2) under the subject purpose key; ``aad`` binds
        the ciphertext to its row (the verification's id)."""
        plaintext = json.dumps(
            {
                "v": FORMAT_VERSION,
                "real_name": self.real_name,
                "id_number": self.id_number,
                "phone": self.phone,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return seal(master, SUBJECT_SEAL, plaintext.encode(), aad, suite)

    @classmethod
    def open(cls, master: bytes, token: str, aad: bytes) -> Subject:
        """The subject sealed in ``token`` (any format version, either crypto suite).

        Raises:
            cryptography.exceptions.InvalidTag: wrong key, row or purpose, or a tampered value.
            SealFormatError: it decrypted, but holds no known format.
        """
        return _decode(json.loads(unseal(master, SUBJECT_SEAL, token, aad)))


def _encode_v1(subject: Subject) -> str:
    return json.dumps([subject.real_name, subject.id_number, subject.phone], ensure_ascii=False)


def _decode(data: Any) -> Subject:
    fields: list[Any]
    if isinstance(data, dict) and data.get("v") == FORMAT_VERSION:
        fields = [data.get("real_name"), data.get("id_number"), data.get("phone")]
    elif isinstance(data, list):  # version 1: positional
        fields = data
    else:
        raise SealFormatError("unknown sealed subject format")
    if len(fields) != 3 or not all(isinstance(f, str) for f in fields):
        raise SealFormatError("a sealed subject needs three text fields")
    real_name, id_number, phone = (str(f) for f in fields)
    return Subject(real_name=real_name, id_number=id_number, phone=phone)
