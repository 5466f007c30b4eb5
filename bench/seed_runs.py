"""Seed a reprorun store with N search runs fast: bulk inserts straight into the schema.

    python bench/seed_runs.py --tracking-uri URI --runs N

The runs are bench/tracking.py's search runs (``iter_seed_runs``: the same params, tags and
metrics for the same N, whatever the tool), in the experiment ``bench-search-N``, which is
tagged ``bench.seeded`` when complete (tracking.py then uses it as it is). They are written as
reprorun's own create_run + log_batch would write them (a run, its params, tags, metric points
and latest metrics, with the run's experiment and start time copied where schema 5 keeps them),
but in bulk: executemany in one transaction per 50,000 runs on SQLite, COPY on PostgreSQL.
A million runs (10 million rows) take a few minutes. The store is created when new; an
experiment left half-seeded by an interrupted run is refused (delete it, or use a new store).
PostgreSQL is VACUUMed and ANALYZEd afterwards, as autovacuum would; SQLite is left without
statistics, as every SQLite store is.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking import SEEDED_TAG, SeedRun, iter_seed_runs

CHUNK = 50_000

Rows = dict[str, list[tuple[Any, ...]]]

COLUMNS = {
    "runs": (
        "run_uuid",
        "name",
        "experiment_id",
        "user_id",
        "status",
        "start_time",
        "end_time",
        "artifact_uri",
        "lifecycle_stage",
    ),
    "params": ("run_uuid", "key", "value", "experiment_id", "start_time"),
    "tags": ("run_uuid", "key", "value", "experiment_id"),
    "metrics": ("run_uuid", "key", "value", "is_nan", "step", "timestamp"),
    "latest_metrics": (
        "run_uuid",
        "key",
        "value",
        "is_nan",
        "step",
        "timestamp",
        "experiment_id",
        "start_time",
    ),
}


def chunks(n: int, experiment_id: int, location: str) -> Iterator[Rows]:
    """The rows of the n runs, CHUNK runs at a time; run ids from a fixed seed."""
    ids = random.Random(n)
    rows: Rows = {t: [] for t in COLUMNS}
    run: SeedRun
    for i, run in enumerate(iter_seed_runs(n)):
        rid = f"{ids.getrandbits(128):032x}"
        t = run.start_time
        uri = f"{location}/{rid}/artifacts"
        rows["runs"].append((rid, run.name, experiment_id, "", "RUNNING", t, None, uri, "active"))
        rows["params"] += [(rid, k, v, experiment_id, t) for k, v in run.params.items()]
        tags = {**run.tags, "mlflow.runName": run.name}
        rows["tags"] += [(rid, k, v, experiment_id) for k, v in tags.items()]
        for key, value in (("acc", run.acc), ("loss", run.loss)):
            rows["metrics"].append((rid, key, value, False, 0, t))
            rows["latest_metrics"].append((rid, key, value, False, 0, t, experiment_id, t))
        if (i + 1) % CHUNK == 0:
            yield rows
            rows = {t: [] for t in COLUMNS}
    if rows["runs"]:
        yield rows


def insert_sqlite(path: str, batches: Iterator[Rows], n: int) -> None:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a bench seed: redone if the machine dies
        conn.execute("PRAGMA cache_size = -1000000")  # 1 GB: random run ids hit every page
        done = 0
        for rows in batches:
            conn.execute("BEGIN IMMEDIATE")
            for table, columns in COLUMNS.items():
                names = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join("?" for _ in columns)
                conn.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows[table])
            conn.execute("COMMIT")
            done += len(rows["runs"])
            progress(done, n)
    finally:
        conn.close()


def _copy_text(rows: Sequence[tuple[Any, ...]]) -> io.StringIO:
    def cell(v: Any) -> str:
        if v is None:
            return "\\N"
        if isinstance(v, bool):
            return "t" if v else "f"
        if isinstance(v, float):
            return repr(v)
        return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    return io.StringIO("".join("\t".join(cell(v) for v in row) + "\n" for row in rows))


def insert_postgres(engine: Any, batches: Iterator[Rows], n: int) -> None:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        done = 0
        for rows in batches:
            for table, columns in COLUMNS.items():
                names = ", ".join(f'"{c}"' for c in columns)
                statement = f"COPY {table} ({names}) FROM STDIN"
                if hasattr(cursor, "copy_expert"):  # psycopg2
                    cursor.copy_expert(statement, _copy_text(rows[table]))
                else:  # psycopg 3
                    with cursor.copy(statement) as copy:
                        copy.write(_copy_text(rows[table]).getvalue())
            raw.commit()
            done += len(rows["runs"])
            progress(done, n)
        raw.commit()
        # What autovacuum would do soon after: statistics, and the visibility map that lets
        # PostgreSQL answer from an index alone.
        driver = raw.driver_connection
        driver.autocommit = True  # VACUUM runs outside a transaction
        try:
            with driver.cursor() as plain:
                for table in COLUMNS:
                    plain.execute(f"VACUUM ANALYZE {table}")
        finally:
            driver.autocommit = False
    finally:
        raw.close()


def progress(done: int, n: int) -> None:
    if done % 200_000 == 0 or done == n:
        print(f"  {done:,}/{n:,} runs", flush=True)


def seed(uri: str, n: int) -> str:
    """The id of experiment bench-search-n in the store at ``uri``, seeding it when new."""
    from reprorun.tracking.store import open_store
    from reprorun.tracking.store.database import SqlAlchemyDatabase, SqliteDatabase

    store: Any = open_store(uri)
    try:
        name = f"bench-search-{n}"
        exp = str(store.get_or_create_experiment(name))
        if store.get_experiment(exp).tags.get(SEEDED_TAG) == "true":
            return exp
        if store.search_runs([exp], max_results=1):
            sys.exit(f"experiment {name} in {uri} is partly seeded (interrupted?): delete it")
        location = store.get_experiment(exp).artifact_location
        start = time.perf_counter()
        print(f"seeding {n:,} runs into {name} ...", flush=True)
        batches = chunks(n, int(exp), location)
        db = store.db
        if isinstance(db, SqliteDatabase):
            insert_sqlite(db.path, batches, n)
        elif isinstance(db, SqlAlchemyDatabase) and db.dialect == "sqlite":
            assert db.path is not None
            insert_sqlite(db.path, batches, n)
        elif isinstance(db, SqlAlchemyDatabase) and db.dialect == "postgresql":
            insert_postgres(db.engine, batches, n)
        else:
            sys.exit(f"seed_runs.py seeds SQLite and PostgreSQL stores, not {uri}")
        store.set_experiment_tag(exp, SEEDED_TAG, "true")
        print(f"seeded {n:,} runs in {time.perf_counter() - start:.0f} s", flush=True)
        return exp
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracking-uri", required=True, help="a SQLite file or PostgreSQL URL")
    parser.add_argument("--runs", type=int, required=True)
    args = parser.parse_args()
    seed(args.tracking_uri, args.runs)


if __name__ == "__main__":
    main()
