"""Search flat in the number of runs: each run's experiment (and start time) copied into its
params, tags and latest metrics, and indexes that read one range per search page.

Revision ID: 0005
Revises: 0004

The copies are filled from ``runs`` here; the store writes them with every row from now on.
The run index becomes (experiment, newest first, run id), the order of a first page.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PREFIX = 200  # schema.PARAM_PREFIX at this version


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, columns in (
        ("params", ("experiment_id", "start_time")),
        ("tags", ("experiment_id",)),
        ("latest_metrics", ("experiment_id", "start_time")),
    ):
        for column in columns:
            kind = sa.Integer() if column == "experiment_id" else sa.BigInteger()
            op.add_column(table, sa.Column(column, kind))
        sets = ", ".join(
            f"{c} = (SELECT r.{c} FROM runs r WHERE r.run_uuid = {table}.run_uuid)"  # noqa: S608
            for c in columns
        )
        op.execute(f"UPDATE {table} SET {sets}")  # noqa: S608  (fixed names only)

    op.drop_index("ix_runs_experiment_start", table_name="runs")
    op.create_index(
        "ix_runs_experiment_order",
        "runs",
        ["experiment_id", sa.text("start_time DESC"), "run_uuid"],
    )
    prefix = f"substr(value, 1, {PREFIX})" + (' COLLATE "C"' if postgres else "")
    for name, start, run in (
        ("asc", "start_time DESC", "run_uuid"),
        ("desc", "start_time", "run_uuid DESC"),
    ):
        op.create_index(
            f"ix_params_order_{name}",
            "params",
            ["experiment_id", "key", sa.text(prefix), sa.text(start), sa.text(run)],
        )
        op.create_index(
            f"ix_latest_metrics_order_{name}",
            "latest_metrics",
            ["experiment_id", "key", "is_nan", "value", sa.text(start), sa.text(run)],
        )
    op.create_index(
        "ix_latest_metrics_time",
        "latest_metrics",
        ["experiment_id", "key", sa.text("start_time DESC"), "run_uuid", "is_nan", "value"],
    )
    op.create_index(
        "ix_params_length", "params", ["experiment_id", "key", sa.text("length(value)")]
    )
    op.create_index("ix_tags_experiment_key", "tags", ["experiment_id", "key"])
    op.execute("UPDATE schema_version SET version = 5")
