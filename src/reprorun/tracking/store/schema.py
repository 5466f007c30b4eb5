"""The tracking schema, declared once in SQLAlchemy Core.

``schema_sqlite.sql`` beside this file is generated from it (run this module to print it);
``tests/unit/test_schema_and_package.py`` fails when the two drift apart. Version 1 is the
first schema, 2 adds MLflow 3's logged models, 3 indexes metric points by step and time, 4
adds the metrics attached to logged models, 5 copies each run's experiment (and start time) into
its params, tags and latest metrics and indexes them so search reads one index range whatever the
number of runs (``search/plans.py``), 6 adds the model registry (registered models, versions,
their tags and aliases).
Every change bumps ``SCHEMA_VERSION`` (defined once, in ``version.py``) and adds an
alembic revision under ``migrations/versions`` named by the version (``0003``);
``migrations.upgrade`` brings an older store up to date. A store written by a newer version is
refused rather than misread.

Importing this module imports SQLAlchemy: only the SQLAlchemy path and the tests do.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from reprorun.tracking.store.version import SCHEMA_VERSION

metadata = MetaData()

# A param value is ordered by its first PARAM_PREFIX characters in the index (PostgreSQL's B-tree
# takes at most ~2,700 bytes an entry; values reach 8,000 characters); search uses that index
# only for a key whose values all fit (see search/plans.py). On PostgreSQL params are compared
# by code point (COLLATE "C"), as SQLite compares them, whatever the database's collation.
PARAM_PREFIX = 200


class param_sort_value(FunctionElement[Any]):
    """``substr(value, 1, PARAM_PREFIX)``, by code point on PostgreSQL: what params sort by."""

    inherit_cache = True
    name = "param_sort_value"


@compiles(param_sort_value)
def _sort_value(element: Any, compiler: Any, **kw: Any) -> str:
    return f"substr({compiler.process(element.clauses, **kw)}, 1, {PARAM_PREFIX})"


@compiles(param_sort_value, "postgresql")
def _sort_value_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return f'substr({compiler.process(element.clauses, **kw)}, 1, {PARAM_PREFIX}) COLLATE "C"'


# BIGINT autoincrement is only a rowid alias on SQLite when spelt INTEGER.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

experiments = Table(
    "experiments",
    metadata,
    Column("experiment_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(256), nullable=False, unique=True),
    Column("artifact_location", String(1000), nullable=False),
    Column("lifecycle_stage", String(32), nullable=False, server_default="active"),
    Column("creation_time", BigInteger),
    Column("last_update_time", BigInteger),
)

experiment_tags = Table(
    "experiment_tags",
    metadata,
    Column("experiment_id", Integer, ForeignKey("experiments.experiment_id"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", String(5000)),
    PrimaryKeyConstraint("experiment_id", "key"),
)

runs = Table(
    "runs",
    metadata,
    Column("run_uuid", String(32), primary_key=True),
    Column("name", String(250)),
    Column("experiment_id", Integer, ForeignKey("experiments.experiment_id"), nullable=False),
    Column("user_id", String(256)),
    Column("status", String(20), nullable=False),
    Column("start_time", BigInteger, nullable=False),
    Column("end_time", BigInteger),
    Column("artifact_uri", String(1000), nullable=False),
    Column("lifecycle_stage", String(20), nullable=False, server_default="active"),
)
# Search's first page and the runs without an order key: newest first, then run id.
Index("ix_runs_experiment_order", runs.c.experiment_id, runs.c.start_time.desc(), runs.c.run_uuid)

params = Table(
    "params",
    metadata,
    Column("run_uuid", String(32), ForeignKey("runs.run_uuid"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", String(8000), nullable=False),
    # The run's experiment and start time, copied (neither ever changes): see search/plans.py.
    Column("experiment_id", Integer),
    Column("start_time", BigInteger),
    PrimaryKeyConstraint("run_uuid", "key"),
)
# order_by params.<key>: ascending is read forwards from the first, descending backwards from
# the second (ties: newest first, then run id, as MLflow); the third tells whether a key has
# values longer than the prefix (one seek).
Index(
    "ix_params_order_asc",
    params.c.experiment_id,
    params.c.key,
    param_sort_value(params.c.value),
    params.c.start_time.desc(),
    params.c.run_uuid,
)
Index(
    "ix_params_order_desc",
    params.c.experiment_id,
    params.c.key,
    param_sort_value(params.c.value),
    params.c.start_time,
    params.c.run_uuid.desc(),
)
Index("ix_params_length", params.c.experiment_id, params.c.key, func.length(params.c.value))

tags = Table(
    "tags",
    metadata,
    Column("run_uuid", String(32), ForeignKey("runs.run_uuid"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", String(8000)),
    Column("experiment_id", Integer),  # the run's, copied: the keys an experiment uses
    PrimaryKeyConstraint("run_uuid", "key"),
)
Index("ix_tags_experiment_key", tags.c.experiment_id, tags.c.key)

metrics = Table(
    "metrics",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("run_uuid", String(32), ForeignKey("runs.run_uuid"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", Float(precision=53), nullable=False),
    Column("is_nan", Boolean, nullable=False, server_default="0"),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    # Finds one point exactly: a point already stored is not stored again (see sql/runs.py).
    Index("ix_metrics_run_key_step_time", "run_uuid", "key", "step", "timestamp"),
)

latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_uuid", String(32), ForeignKey("runs.run_uuid"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", Float(precision=53), nullable=False),
    Column("is_nan", Boolean, nullable=False, server_default="0"),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    # The run's experiment and start time, copied (neither ever changes): see search/plans.py.
    Column("experiment_id", Integer),
    Column("start_time", BigInteger),
    PrimaryKeyConstraint("run_uuid", "key"),
)
# order_by metrics.<key>: real values (is_nan false), then NaN; ascending read forwards from the
# first index, descending backwards from the second (ties: newest first, then run id).
Index(
    "ix_latest_metrics_order_asc",
    latest_metrics.c.experiment_id,
    latest_metrics.c.key,
    latest_metrics.c.is_nan,
    latest_metrics.c.value,
    latest_metrics.c.start_time.desc(),
    latest_metrics.c.run_uuid,
)
# A filter comparing a metric, newest first: the runs that have it in time order, the value
# read from the index (search/plans.py's driving_metric).
Index(
    "ix_latest_metrics_time",
    latest_metrics.c.experiment_id,
    latest_metrics.c.key,
    latest_metrics.c.start_time.desc(),
    latest_metrics.c.run_uuid,
    latest_metrics.c.is_nan,
    latest_metrics.c.value,
)
Index(
    "ix_latest_metrics_order_desc",
    latest_metrics.c.experiment_id,
    latest_metrics.c.key,
    latest_metrics.c.is_nan,
    latest_metrics.c.value,
    latest_metrics.c.start_time,
    latest_metrics.c.run_uuid.desc(),
)

# MLflow 3's logged models (what mlflow.<flavor>.log_model creates).
logged_models = Table(
    "logged_models",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("experiment_id", Integer, ForeignKey("experiments.experiment_id"), nullable=False),
    Column("name", String(500), nullable=False),
    Column("artifact_location", String(1000), nullable=False),
    Column("creation_timestamp_ms", BigInteger, nullable=False),
    Column("last_updated_timestamp_ms", BigInteger, nullable=False),
    Column("status", String(32), nullable=False),
    Column("lifecycle_stage", String(32), nullable=False, server_default="active"),
    Column("model_type", String(500)),
    Column("source_run_id", String(32)),
    Column("status_message", String(1000)),
    Index("ix_logged_models_experiment", "experiment_id", "creation_timestamp_ms"),
)

logged_model_tags = Table(
    "logged_model_tags",
    metadata,
    Column("model_id", String(64), ForeignKey("logged_models.model_id"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", String(8000)),
    PrimaryKeyConstraint("model_id", "key"),
)

logged_model_params = Table(
    "logged_model_params",
    metadata,
    Column("model_id", String(64), ForeignKey("logged_models.model_id"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", String(8000), nullable=False),
    PrimaryKeyConstraint("model_id", "key"),
)

# Metric points logged with a model_id (MLflow 3): attached to that model, with the dataset
# they were measured on. A point is kept once per (model, key, time, step, run), as in MLflow.
logged_model_metrics = Table(
    "logged_model_metrics",
    metadata,
    Column("model_id", String(64), ForeignKey("logged_models.model_id"), nullable=False),
    Column("metric_name", String(250), nullable=False),
    Column("metric_timestamp_ms", BigInteger, nullable=False),
    Column("metric_step", BigInteger, nullable=False),
    Column("metric_value", Float(precision=53), nullable=False),
    Column("is_nan", Boolean, nullable=False, server_default="0"),
    Column("experiment_id", Integer, nullable=False),
    Column("run_id", String(32), nullable=False),
    Column("dataset_name", String(500)),
    Column("dataset_digest", String(36)),
    PrimaryKeyConstraint("model_id", "metric_name", "metric_timestamp_ms", "metric_step", "run_id"),
    Index("ix_logged_model_metrics_dataset", "dataset_name", "dataset_digest"),
)

# The model registry (MLflow's): registered models by name, their numbered versions (a deleted
# version keeps its number in the stage 'Deleted_Internal', never reused), tags and aliases.
# Everything of a model names it; a rename rewrites the name in each table.
registered_models = Table(
    "registered_models",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("creation_time", BigInteger, nullable=False),
    Column("last_updated_time", BigInteger, nullable=False),
    Column("description", String(5000)),
)

registered_model_tags = Table(
    "registered_model_tags",
    metadata,
    Column("name", String(256), ForeignKey("registered_models.name"), nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", String(5000)),
    PrimaryKeyConstraint("name", "key"),
)

registered_model_aliases = Table(
    "registered_model_aliases",
    metadata,
    Column("name", String(256), ForeignKey("registered_models.name"), nullable=False),
    Column("alias", String(256), nullable=False),
    Column("version", Integer, nullable=False),
    PrimaryKeyConstraint("name", "alias"),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("name", String(256), ForeignKey("registered_models.name"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("creation_time", BigInteger, nullable=False),
    Column("last_updated_time", BigInteger, nullable=False),
    Column("description", String(5000)),
    Column("user_id", String(256)),
    Column("current_stage", String(20), nullable=False),
    Column("source", String(1000), nullable=False),
    Column("storage_location", String(1000)),
    Column("run_id", String(32)),
    Column("run_link", String(500)),
    Column("model_id", String(64)),
    Column("status", String(20), nullable=False),
    Column("status_message", String(500)),
    PrimaryKeyConstraint("name", "version"),
    Index("ix_model_versions_run", "run_id"),
    Index("ix_model_versions_model", "model_id"),
)

model_version_tags = Table(
    "model_version_tags",
    metadata,
    Column("name", String(256), ForeignKey("registered_models.name"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("key", String(250), nullable=False),
    Column("value", String(5000)),
    PrimaryKeyConstraint("name", "version", "key"),
)

# alembic's own bookkeeping, created with the schema so a new store is already at head.
alembic_version = Table(
    "alembic_version",
    metadata,
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def sqlite_ddl() -> str:
    """The CREATE statements for SQLite, one per paragraph, as stored in schema_sqlite.sql."""
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialect = sqlite.dialect()
    statements: list[str] = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(str(CreateIndex(index).compile(dialect=dialect)).strip())
    header = (
        "-- Generated from reprorun/tracking/store/schema.py by\n"
        "--   python -m reprorun.tracking.store.schema > schema_sqlite.sql\n"
        f"-- schema version {SCHEMA_VERSION}; do not edit by hand.\n"
    )
    return header + "\n".join(s + ";\n" for s in statements)


if __name__ == "__main__":
    print(sqlite_ddl(), end="")
