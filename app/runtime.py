"""What a running service holds: settings, database, keys, hashers and plug-ins.

Built once at start-up (``build_runtime``) and kept on ``app.state.runtime``; the CLI and the
worker build the same object, so every entry point runs the same configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.crypto import Argon2Pool, Argon2Profile
from app.db import create_engine, create_sessionmaker
from app.identity import BlindIndexer
from app.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    blind: BlindIndexer
    identity_hasher: Argon2Pool
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def master_key(self) -> bytes:
        return self.settings.master_key

    async def close(self) -> None:
        await self.engine.dispose()


def build_runtime(settings: Settings, *, engine: AsyncEngine | None = None) -> Runtime:
    engine = engine or create_engine(settings)
    profile = Argon2Profile(
        memory_kib=settings.identity_hash_memory_kib,
        time_cost=settings.identity_hash_time_cost,
        parallelism=settings.identity_hash_parallelism,
    )
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=create_sessionmaker(engine),
        blind=BlindIndexer(settings.blind_keys, settings.blind_key_version),
        identity_hasher=Argon2Pool(profile, settings.hash_workers),
    )
