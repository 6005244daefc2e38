"""Security helpers: derived keys, API key hashing, argon2id off the event loop."""

from __future__ import annotations

import asyncio
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
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_T = TypeVar("_T")

API_KEY_PREFIXES = {"test": "rn_test_", "live": "rn_live_"}


@lru_cache(maxsize=64)
def derive_key(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose (HKDF-SHA256), so no two uses ever share a key."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"realname/" + purpose.encode()
    ).derive(master)


def keyed_hash(master: bytes, purpose: str, data: bytes) -> str:
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


def seal(master: bytes, purpose: str, plaintext: bytes, aad: bytes) -> str:
    """AES-256-GCM under a purpose key; ``aad`` binds the ciphertext to its row."""
    import base64
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    sealed = AESGCM(derive_key(master, purpose)).encrypt(nonce, plaintext, aad)
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(master: bytes, purpose: str, token: str, aad: bytes) -> bytes:
    import base64

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = base64.urlsafe_b64decode(token)
    return AESGCM(derive_key(master, purpose)).decrypt(raw[:12], raw[12:], aad)
