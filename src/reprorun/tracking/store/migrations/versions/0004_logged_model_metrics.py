"""Metrics attached to logged models: points logged with a model_id, with their dataset.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "logged_model_metrics",
        sa.Column(
            "model_id", sa.String(64), sa.ForeignKey("logged_models.model_id"), nullable=False
        ),
        sa.Column("metric_name", sa.String(250), nullable=False),
        sa.Column("metric_timestamp_ms", sa.BigInteger, nullable=False),
        sa.Column("metric_step", sa.BigInteger, nullable=False),
        sa.Column("metric_value", sa.Float(precision=53), nullable=False),
        sa.Column("is_nan", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("dataset_name", sa.String(500)),
        sa.Column("dataset_digest", sa.String(36)),
        sa.PrimaryKeyConstraint(
            "model_id", "metric_name", "metric_timestamp_ms", "metric_step", "run_id"
        ),
    )
    op.create_index(
        "ix_logged_model_metrics_dataset",
        "logged_model_metrics",
        ["dataset_name", "dataset_digest"],
    )
    op.execute("UPDATE schema_version SET version = 4")
