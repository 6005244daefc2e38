"""Security helpers: derived keys, API key hashing, argon2id off the event loop, and the two
crypto suites for personal data.

Crypto suites
-------------
``intl`` (the default)
    HKDF-SHA-256 derived keys, HMAC-SHA-256 keyed hashes and blind indexes, AES-256-GCM seals.
``gm`` (GM/T, 国密)
    HKDF over SM3 derived keys, HMAC-SM3 (GM/T 0004-2012, ISO/IEC 10118-3) keyed hashes and blind
    indexes, SM4-GCM seals (GM/T 0002-2012, ISO/IEC 18033-3 block cipher in NIST SP 800-38D GCM,
    96-bit nonce, 128-bit tag). All from the ``cryptography`` package (``hashes.SM3``,
    ``algorithms.SM4``); tests pin the national-standard vectors.

Every stored value says which suite made it: a sealed value of the ``gm`` suite starts with
``sm4-gcm.`` (the ``intl`` format has no prefix, and base64url never contains a dot), and blind
indexes and code HMACs are stored beside a suite column. :func:`unseal` opens either.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal, TypeVar, get_args

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_T = TypeVar("_T")

Suite = Literal["intl", "gm"]
SUITES: Final[tuple[Suite, ...]] = get_args(Suite)
DEFAULT_SUITE: Final[Suite] = "intl"
GM_SEAL_PREFIX: Final = "sm4-gcm."
_NONCE_BYTES: Final = 12
_GCM_TAG_BYTES: Final = 16

API_KEY_PREFIXES = {"test": "rn_test_", "live": "rn_live_"}


@lru_cache(maxsize=64)
def derive_key(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose (HKDF-SHA256), so no two uses ever share a key."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"realname/" + purpose.encode()
    ).derive(master)


@lru_cache(maxsize=64)
def derive_gm_key(master: bytes, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose of the ``gm`` suite (HKDF over SM3); 16 bytes for SM4."""
    return HKDF(
        algorithm=hashes.SM3(), length=length, salt=None, info=b"realname/gm/" + purpose.encode()
    ).derive(master)


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """HMAC (RFC 2104) over SM3."""
    mac = crypto_hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


def keyed_hash(master: bytes, purpose: str, data: bytes, suite: Suite = DEFAULT_SUITE) -> str:
    """Lowercase hex HMAC of ``data`` under the purpose key: SHA-256 (``intl``) or SM3 (``gm``);
    64 characters either way."""
    if suite == "gm":
        return hmac_sm3(derive_gm_key(master, purpose), data).hex()
    return hmac.new(derive_key(master, purpose), data, hashlib.sha256).hexdigest()


def generate_api_key(mode: str) -> str:
    """``rn_test_…`` / ``rn_live_…`` followed by 256 bits from the OS CSPRNG."""
    return API_KEY_PREFIXES[mode] + secrets.token_urlsafe(32)


def hash_api_key(master: bytes, api_key: str) -> str:
    """API keys carry 256 bits of entropy, so a keyed SHA-256 is enough (no slow hash needed)."""
    return keyed_hash(master, "api-key", api_key.encode())


@dataclass(frozen=True, slots=True)
class Argon2Profile:
    memory_kib: int
    time_cost: int
    parallelism: int

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_kib,
            parallelism=self.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )


#: OWASP's minimum (19 MiB, t=2, p=1): for the per-registration identity hash.
OWASP_MINIMUM = Argon2Profile(memory_kib=19 * 1024, time_cost=2, parallelism=1)
#: argon2-cffi's RFC 9106 low-memory default (64 MiB, t=3, p=4): for admin passwords.
RFC_9106_LOW_MEMORY = Argon2Profile(memory_kib=64 * 1024, time_cost=3, parallelism=4)
#: Cheapest profile: tests only.
TEST_PROFILE = Argon2Profile(memory_kib=8, time_cost=1, parallelism=1)


def _lower_thread_priority(niceness: int) -> None:
    """Thread initializer: make this (hashing) thread yield the CPU to the event loop."""
    # Not Linux, or not permitted: hash at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class Argon2Pool:
    """argon2id hashing in its own threads, at most ``workers`` at once.

    argon2-cffi releases the GIL, so a pool sized to the cores reaches most of the machine's
    hashing ceiling while keeping the event loop free; an unbounded pool only adds memory and
    latency (each hash takes the profile's memory cost). The threads run at a lower priority
    (``niceness``, Linux): when the cores are busy, the event loop's short requests
    (introspection, code checks) go first and hashing takes the rest of the machine.
    """

    def __init__(self, profile: Argon2Profile, workers: int, *, niceness: int = 10) -> None:
        self.profile = profile
        #: At most this many hashes at once (threads are started on demand, up to this many).
        self.workers = workers
        self._hasher = profile.hasher()
        self._executor = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="argon2",
            initializer=_lower_thread_priority,
            initargs=(niceness,),
        )

    async def _run(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def hash(self, secret: bytes | str) -> str:
        return await self._run(lambda: self._hasher.hash(secret))

    async def verify(self, encoded: str, secret: bytes | str) -> bool:
        def _verify() -> bool:
            try:
                return self._hasher.verify(encoded, secret)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await self._run(_verify)

    def needs_rehash(self, encoded: str) -> bool:
        return self._hasher.check_needs_rehash(encoded)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def seal(
    master: bytes, purpose: str, plaintext: bytes, aad: bytes, suite: Suite = DEFAULT_SUITE
) -> str:
    """Encrypt under a purpose key; ``aad`` binds the ciphertext to its row.

    ``intl``: AES-256-GCM, ``base64url(nonce || ciphertext || tag)``. ``gm``: SM4-GCM,
    ``"sm4-gcm." + base64url(nonce || ciphertext || tag)``.
    """
    nonce = os.urandom(_NONCE_BYTES)
    if suite == "gm":
        encryptor = Cipher(
            algorithms.SM4(derive_gm_key(master, purpose, 16)), modes.GCM(nonce)
        ).encryptor()
        encryptor.authenticate_additional_data(aad)
        sealed = encryptor.update(plaintext) + encryptor.finalize() + encryptor.tag
        return GM_SEAL_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()
    sealed = AESGCM(derive_key(master, purpose)).encrypt(nonce, plaintext, aad)
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def as_suite(value: str | None) -> Suite:
    """A stored suite column's value as a :data:`Suite` (rows from before suites are ``intl``)."""
    return "gm" if value == "gm" else "intl"


def sealed_suite(token: str) -> Suite:
    """Which suite sealed ``token``."""
    return "gm" if token.startswith(GM_SEAL_PREFIX) else "intl"


def unseal(master: bytes, purpose: str, token: str, aad: bytes) -> bytes:
    """Open a value sealed by :func:`seal` under either suite.

    Raises:
        cryptography.exceptions.InvalidTag: wrong key, row or purpose, or a tampered value.
    """
    if sealed_suite(token) == "gm":
        raw = base64.urlsafe_b64decode(token[len(GM_SEAL_PREFIX) :])
        nonce, body, tag = (
            raw[:_NONCE_BYTES],
            raw[_NONCE_BYTES:-_GCM_TAG_BYTES],
            raw[-_GCM_TAG_BYTES:],
        )
        decryptor = Cipher(
            algorithms.SM4(derive_gm_key(master, purpose, 16)), modes.GCM(nonce, tag)
        ).decryptor()
        decryptor.authenticate_additional_data(aad)
        return decryptor.update(body) + decryptor.finalize()
    raw = base64.urlsafe_b64decode(token)
    return AESGCM(derive_key(master, purpose)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)


def reseal(master: bytes, purpose: str, token: str, aad: bytes, suite: Suite) -> str | None:
    """``token`` sealed again under ``suite``; ``None`` when it already is."""
    if sealed_suite(token) == suite:
        return None
    return seal(master, purpose, unseal(master, purpose, token, aad), aad, suite)
