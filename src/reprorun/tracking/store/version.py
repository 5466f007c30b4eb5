"""The version of the tracking schema, defined once: ``schema.py`` declares that schema,
``sql/lifecycle.py`` creates, checks and migrates stores to it.

Every schema change bumps it, changes ``schema.py`` (and the generated ``schema_sqlite.sql``)
and adds an alembic revision under ``migrations/versions`` named by the version (``0006``).
"""

SCHEMA_VERSION = 6
