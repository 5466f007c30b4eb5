"""Schema migrations with alembic: one revision per schema version, named ``0001``, ``0002``...

A new store is created at the current version directly (and stamped so); ``upgrade`` brings a
store written by an older reprorun up to date. It runs only when the stored version is behind,
so alembic is imported on that path alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def revision(version: int) -> str:
    return f"{version:04d}"


def upgrade(engine: Any, from_version: int) -> None:
    """Upgrade the database behind ``engine`` (a SQLAlchemy engine) from ``from_version``."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        if not inspect(conn).has_table("alembic_version"):
            # Stores written before alembic was adopted know only their schema_version.
            command.stamp(config, revision(from_version))
        command.upgrade(config, "head")
