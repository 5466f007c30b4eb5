"""The model registry (MLflow's): registered models, their versions, tags and aliases.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _name() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "name", sa.String(256), sa.ForeignKey("registered_models.name"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("creation_time", sa.BigInteger, nullable=False),
        sa.Column("last_updated_time", sa.BigInteger, nullable=False),
        sa.Column("description", sa.String(5000)),
    )
    op.create_table(
        "registered_model_tags",
        _name(),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.String(5000)),
        sa.PrimaryKeyConstraint("name", "key"),
    )
    op.create_table(
        "registered_model_aliases",
        _name(),
        sa.Column("alias", sa.String(256), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("name", "alias"),
    )
    op.create_table(
        "model_versions",
        _name(),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("creation_time", sa.BigInteger, nullable=False),
        sa.Column("last_updated_time", sa.BigInteger, nullable=False),
        sa.Column("description", sa.String(5000)),
        sa.Column("user_id", sa.String(256)),
        sa.Column("current_stage", sa.String(20), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("storage_location", sa.String(1000)),
        sa.Column("run_id", sa.String(32)),
        sa.Column("run_link", sa.String(500)),
        sa.Column("model_id", sa.String(64)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("status_message", sa.String(500)),
        sa.PrimaryKeyConstraint("name", "version"),
    )
    op.create_index("ix_model_versions_run", "model_versions", ["run_id"])
    op.create_index("ix_model_versions_model", "model_versions", ["model_id"])
    op.create_table(
        "model_version_tags",
        _name(),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.String(5000)),
        sa.PrimaryKeyConstraint("name", "version", "key"),
    )
    op.execute("UPDATE schema_version SET version = 6")
