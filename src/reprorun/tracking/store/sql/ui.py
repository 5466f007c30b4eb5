"""Queries only the web UI and the REST API's summaries ask: experiments with their run counts,
the keys runs use, a tag's values across runs, latest metric points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprorun.tracking.store.database import Connection
from reprorun.tracking.store.sql.common import StoreBase, exp_int
from reprorun.tracking.store.sql.experiments import read_experiments


class UiQueries(StoreBase):
    """The reads of ``SqlStore`` beyond MLflow's store: for the web UI and the REST summaries."""

    def experiment_summaries(self, view: str = "active") -> list[dict[str, Any]]:
        """Experiments with their number of active runs and last activity (the latest run
        start or end, else the experiment's own update), newest activity first."""
        stages = {"active": "('active')", "deleted": "('deleted')", "all": "('active', 'deleted')"}
        where = f"WHERE lifecycle_stage IN {stages[view]}"

        def read(conn: Connection) -> list[dict[str, Any]]:
            counts = {
                str(eid): (n, last)
                for eid, n, last in conn.fetch(
                    "SELECT experiment_id, COUNT(*), MAX(COALESCE(end_time, start_time)) "
                    "FROM runs WHERE lifecycle_stage = 'active' GROUP BY experiment_id"
                )
            }
            summaries = []
            for exp in read_experiments(conn, where, {}):
                n, last = counts.get(exp.experiment_id, (0, None))
                summary = exp.to_dict()
                summary["run_count"] = n
                summary["last_activity"] = max(last or 0, exp.last_update_time or 0) or None
                summaries.append(summary)
            summaries.sort(key=lambda s: -(s["last_activity"] or 0))
            return summaries

        return self.db.read(read)

    def run_keys(self, experiment_ids: Sequence[str], limit: int = 2000) -> dict[str, list[str]]:
        """The param, metric and tag keys used by the experiments' active runs (sorted).

        One index seek a key, not a read of every run: a recursive query walks the distinct
        keys of (experiment, key) in the index, each checked for one active run."""
        ids = [exp_int(e) for e in experiment_ids]
        visit = 10 * int(limit)  # keys looked at, kept or not (those of deleted runs only)

        def read(conn: Connection) -> dict[str, list[str]]:
            found = {}
            tables = {"params": "params", "metrics": "latest_metrics", "tags": "tags"}
            for name, table in tables.items():
                keys: set[str] = set()
                for exp in ids:
                    rows = conn.fetch(
                        "WITH RECURSIVE k (name, n) AS (SELECT "
                        f'(SELECT MIN(x."key") FROM {table} x WHERE x.experiment_id = :e), 1 '
                        f'UNION ALL SELECT (SELECT MIN(x."key") FROM {table} x '
                        'WHERE x.experiment_id = :e AND x."key" > k.name), k.n + 1 FROM k '
                        f"WHERE k.name IS NOT NULL AND k.n < {visit}) "
                        # A scalar subquery, not EXISTS: PostgreSQL would turn EXISTS into
                        # a join over every row of the experiment.
                        "SELECT k.name FROM k WHERE k.name IS NOT NULL AND ("
                        f"SELECT 1 FROM {table} x CROSS JOIN runs r WHERE x.experiment_id = :e "
                        'AND x."key" = k.name AND r.run_uuid = x.run_uuid '
                        f"AND r.lifecycle_stage = 'active' LIMIT 1) = 1 LIMIT {int(limit)}",
                        {"e": exp},
                    )
                    keys.update(r[0] for r in rows)
                found[name] = sorted(keys)[: int(limit)]
            return found

        return self.db.read(read)

    def run_tag_values(
        self, experiment_ids: Sequence[str], key: str, limit: int = 10_000
    ) -> list[tuple[str, str]]:
        """(experiment id, value) of the tag ``key`` on the experiments' runs, deleted ones
        too (what a run recorded stays part of its experiment's history, as in MLflow)."""
        ids = {f"e{i}": exp_int(e) for i, e in enumerate(experiment_ids)}
        if not ids:
            return []
        rows = self.db.read(
            lambda c: c.fetch(
                "SELECT r.experiment_id, t.value FROM tags t "
                "JOIN runs r ON r.run_uuid = t.run_uuid "
                f"WHERE r.experiment_id IN ({', '.join(':' + k for k in ids)}) "
                'AND t."key" = :key '
                f"ORDER BY r.start_time, r.run_uuid LIMIT {int(limit)}",
                {**ids, "key": key},
            )
        )
        return [(str(r[0]), r[1] or "") for r in rows]

    def latest_metric_points(self, run_ids: Sequence[str]) -> dict[str, dict[str, tuple[int, int]]]:
        """(timestamp, step) of each run's latest value per metric key (MLflow's REST answers
        show them beside the value)."""
        points: dict[str, dict[str, tuple[int, int]]] = {rid: {} for rid in run_ids}

        def read(conn: Connection) -> None:
            for start in range(0, len(run_ids), 500):
                chunk = run_ids[start : start + 500]
                names = {f"r{i}": rid for i, rid in enumerate(chunk)}
                in_list = ", ".join(":" + k for k in names)
                for rid, key, timestamp, step in conn.fetch(
                    'SELECT run_uuid, "key", "timestamp", step FROM latest_metrics '
                    f"WHERE run_uuid IN ({in_list})",
                    names,
                ):
                    points[rid][key] = (int(timestamp), int(step))

        self.db.read(read)
        return points
