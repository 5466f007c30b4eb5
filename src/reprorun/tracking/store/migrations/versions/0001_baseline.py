"""Baseline: the schema of reprorun 0.1 (experiments, runs, params, tags, metrics).

Stores of that version were created without alembic; ``upgrade`` stamps them with this
revision before applying the later ones.

Revision ID: 0001
Revises:
"""

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass
