"""Keyed blind indexes and the argon2 input encoding of the identity tuple.

Two crypto suites (see :mod:`app.crypto`): ``intl`` indexes with HMAC-SHA-256 under HKDF-SHA-256
field keys, ``gm`` with HMAC-SM3 under HKDF-SM3 field keys. Both give 64 hex characters; a stored
index is always kept beside its suite and key version, and lookups try every (suite, version).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Final, Literal, NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["MIN_KEY_BYTES", "BlindIndex", "BlindIndexer", "hash_identity_input"]

MIN_KEY_BYTES = 32
_HKDF_INFO_PREFIX: Final = {
    "intl": b"realname/blind-index/v1/",
    "gm": b"realname/blind-index/gm/v1/",
}
IndexSuite = Literal["intl", "gm"]
_SUITES: Final[tuple[IndexSuite, ...]] = ("intl", "gm")


class BlindIndex(NamedTuple):
    """One blind index with what made it: the suite and the key version."""

    suite: IndexSuite
    version: int
    digest: str


class BlindIndexer:
    """Computes keyed blind indexes (HMAC-SHA-256) for lookup and uniqueness of identity fields.

    Each key version's master key is expanded with HKDF-SHA-256 into one independent 32-byte
    key per field (``info = b"realname/blind-index/v1/" + field``), so digests of different
    fields are unrelated even for equal values. Keys never leave this object and are not part
    of its ``repr``. Values must already be canonical (the output of the ``parse_*`` helpers):
    the index is only as stable as its input.
    """

    def __init__(
        self, keys: Mapping[int, bytes], current_version: int, suite: IndexSuite = "intl"
    ) -> None:
        """Create an indexer.

        Args:
            keys: Master keys by version; every key must be at least 32 bytes.
            current_version: The version used for new rows; must be present in ``keys``.
            suite: The suite used for new rows, ``"intl"`` or ``"gm"``.

        Raises:
            ValueError: ``current_version`` is not in ``keys``, a key is shorter than 32 bytes,
                or ``suite`` is unknown.
        """
        if suite not in _SUITES:
            raise ValueError("suite must be 'intl' or 'gm'")
        if current_version not in keys:
            raise ValueError("current_version has no key")
        for version, key in keys.items():
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(
                    f"blind index key version {version} is shorter than {MIN_KEY_BYTES} bytes"
                )
        self._keys = dict(keys)
        self._current_version = current_version
        self._suite: IndexSuite = suite
        self._field_keys: dict[tuple[str, int, str], bytes] = {}

    @property
    def current_version(self) -> int:
        """The key version used by :meth:`compute` when no version is given."""
        return self._current_version

    @property
    def suite(self) -> IndexSuite:
        """The suite used by :meth:`compute` when no suite is given."""
        return self._suite

    def _field_key(self, suite: str, version: int, field: str) -> bytes:
        cached = self._field_keys.get((suite, version, field))
        if cached is None:
            if version not in self._keys:
                raise ValueError(f"unknown blind index key version {version}")
            hkdf = HKDF(
                algorithm=hashes.SM3() if suite == "gm" else hashes.SHA256(),
                length=32,
                salt=None,
                info=_HKDF_INFO_PREFIX[suite] + field.encode("utf-8"),
            )
            cached = self._field_keys[(suite, version, field)] = hkdf.derive(self._keys[version])
        return cached

    def compute(
        self, field: str, value: str, version: int | None = None, suite: str | None = None
    ) -> str:
        """Return the blind index of a canonical ``value`` of ``field``.

        Args:
            field: The field name (``"id_number"``, ``"phone"``, ``"real_name"``).
            value: The canonical value.
            version: Key version; defaults to :attr:`current_version`.
            suite: ``"intl"`` or ``"gm"``; defaults to :attr:`suite`.

        Returns:
            Lowercase hex HMAC-SHA-256 (``intl``) or HMAC-SM3 (``gm``), 64 characters, of the
            UTF-8 value under the field key.

        Raises:
            ValueError: ``version`` is not a known key version, or ``suite`` is unknown.
        """
        suite = self._suite if suite is None else suite
        if suite not in _SUITES:
            raise ValueError("suite must be 'intl' or 'gm'")
        key = self._field_key(suite, self._current_version if version is None else version, field)
        data = value.encode("utf-8")
        if suite == "gm":
            mac = crypto_hmac.HMAC(key, hashes.SM3())
            mac.update(data)
            return mac.finalize().hex()
        return hmac.new(key, data, hashlib.sha256).hexdigest()

    def current(self, field: str, value: str) -> BlindIndex:
        """The index new rows get: the current suite and key version."""
        return BlindIndex(self._suite, self._current_version, self.compute(field, value))

    def candidates(self, field: str, value: str) -> list[BlindIndex]:
        """Every (suite, version) index of ``value``: the current one first, then the current
        suite's older versions (newest first), then the other suite's versions.

        Used for lookups while keys rotate or suites change: a row may still be indexed under an
        older version or the other suite.
        """
        others = sorted((v for v in self._keys if v != self._current_version), reverse=True)
        versions = [self._current_version, *others]
        suites = [self._suite, *(s for s in _SUITES if s != self._suite)]
        return [
            BlindIndex(suite, v, self.compute(field, value, v, suite))
            for suite in suites
            for v in versions
        ]


def hash_identity_input(real_name: str, id_number: str, phone: str) -> bytes:
    """Encode the canonical identity tuple unambiguously for argon2id hashing.

    The encoding is the compact UTF-8 JSON array ``[real_name, id_number, phone]``, so no two
    distinct tuples share an encoding (field boundaries cannot shift) and the result is
    deterministic. Pass canonical values (the output of the ``parse_*`` helpers).
    """
    return json.dumps(
        [real_name, id_number, phone], ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
