"""Keyed blind indexes and the argon2 input encoding of the identity tuple."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["MIN_KEY_BYTES", "BlindIndexer", "hash_identity_input"]

MIN_KEY_BYTES = 32
_HKDF_INFO_PREFIX = b"realname/blind-index/v1/"


class BlindIndexer:
    """Computes keyed blind indexes (HMAC-SHA-256) for lookup and uniqueness of identity fields.

    Each key version's master key is expanded with HKDF-SHA-256 into one independent 32-byte
    key per field (``info = b"realname/blind-index/v1/" + field``), so digests of different
    fields are unrelated even for equal values. Keys never leave this object and are not part
    of its ``repr``. Values must already be canonical (the output of the ``parse_*`` helpers):
    the index is only as stable as its input.
    """

    def __init__(self, keys: Mapping[int, bytes], current_version: int) -> None:
        """Create an indexer.

        Args:
            keys: Master keys by version; every key must be at least 32 bytes.
            current_version: The version used for new rows; must be present in ``keys``.

        Raises:
            ValueError: ``current_version`` is not in ``keys`` or a key is shorter than 32 bytes.
        """
        if current_version not in keys:
            raise ValueError("current_version has no key")
        for version, key in keys.items():
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(
                    f"blind index key version {version} is shorter than {MIN_KEY_BYTES} bytes"
                )
        self._keys = dict(keys)
        self._current_version = current_version
        self._field_keys: dict[tuple[int, str], bytes] = {}

    @property
    def current_version(self) -> int:
        """The key version used by :meth:`compute` when no version is given."""
        return self._current_version

    def _field_key(self, version: int, field: str) -> bytes:
        cached = self._field_keys.get((version, field))
        if cached is None:
            if version not in self._keys:
                raise ValueError(f"unknown blind index key version {version}")
            hkdf = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=_HKDF_INFO_PREFIX + field.encode("utf-8"),
            )
            cached = self._field_keys[(version, field)] = hkdf.derive(self._keys[version])
        return cached

    def compute(self, field: str, value: str, version: int | None = None) -> str:
        """Return the blind index of a canonical ``value`` of ``field``.

        Args:
            field: The field name (``"id_number"``, ``"phone"``, ``"real_name"``).
            value: The canonical value.
            version: Key version; defaults to :attr:`current_version`.

        Returns:
            Lowercase hex HMAC-SHA-256 (64 characters) of the UTF-8 value under the field key.

        Raises:
            ValueError: ``version`` is not a known key version.
        """
        key = self._field_key(self._current_version if version is None else version, field)
        return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()

    def candidates(self, field: str, value: str) -> list[tuple[int, str]]:
        """Return ``(version, digest)`` for every key version, current first, then newest first.

        Used for lookups while keys rotate: a row may still be indexed under an older version.
        """
        others = sorted((v for v in self._keys if v != self._current_version), reverse=True)
        return [(v, self.compute(field, value, v)) for v in [self._current_version, *others]]


def hash_identity_input(real_name: str, id_number: str, phone: str) -> bytes:
    """Encode the canonical identity tuple unambiguously for argon2id hashing.

    The encoding is the compact UTF-8 JSON array ``[real_name, id_number, phone]``, so no two
    distinct tuples share an encoding (field boundaries cannot shift) and the result is
    deterministic. Pass canonical values (the output of the ``parse_*`` helpers).
    """
    return json.dumps(
        [real_name, id_number, phone], ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
