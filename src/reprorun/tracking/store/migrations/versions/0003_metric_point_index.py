"""Index metric points by (run, key, step, timestamp): finding an identical point (MLflow's
client re-sends a run's metrics when it logs a model) must not scan every point of a step.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_metrics_run_key_step", table_name="metrics")
    op.create_index(
        "ix_metrics_run_key_step_time", "metrics", ["run_uuid", "key", "step", "timestamp"]
    )
    op.execute("UPDATE schema_version SET version = 3")
