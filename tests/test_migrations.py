"""Alembic builds the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from app.runtime import Runtime


async def test_models_and_migrations_do_not_drift(runtime: Runtime) -> None:
    """Comparing the migrated database with the models finds no difference."""

    def diff(sync_conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, SQLModel.metadata))

    async with runtime.engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []
