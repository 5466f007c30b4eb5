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
        """The param, metric and tag keys used by the experiments' active runs (sorted)."""
        ids = {f"e{i}": exp_int(e) for i, e in enumerate(experiment_ids)}
        in_list = ", ".join(":" + k for k in ids)

        def read(conn: Connection) -> dict[str, list[str]]:
            found = {}
            tables = {"params": "params", "metrics": "latest_metrics", "tags": "tags"}
            for name, table in tables.items():
                rows = conn.fetch(
                    f'SELECT DISTINCT x."key" FROM {table} x '
                    "JOIN runs r ON r.run_uuid = x.run_uuid "
                    f"WHERE r.experiment_id IN ({in_list}) AND r.lifecycle_stage = 'active' "
                    f'ORDER BY x."key" LIMIT {int(limit)}',
                    ids,
                )
                found[name] = [r[0] for r in rows]
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
