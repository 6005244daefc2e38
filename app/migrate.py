"""Run Alembic migrations from code (``realname migrate``, ``realname serve`` in dev, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(settings: Settings) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["settings"] = settings
    config.attributes["configure_logging"] = False
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the database to ``revision``. Must be called outside a running event loop."""
    import logging

    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    command.upgrade(alembic_config(settings), revision)
