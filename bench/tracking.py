"""Tracking throughput and latency: reprorun against MLflow, embedded and through a server.

    python bench/tracking.py [--quick] [--skip-mlflow] [--json FILE]     the whole comparison
    python bench/tracking.py --tracking-uri URI [--client mlflow]        one store or server

Measured on each target (reprorun's client unless --client mlflow):
  rates      create+end run, single log_metric calls, log_batch points (1,000 metrics a call,
             MLflow's limit), log_param calls; each for ~3 s or 20,000 calls, after 3 warm-up
             calls, median of 3
  search     search_runs over 10,000 seeded runs, 100 results: no filter;
             "metrics.acc > 0.9 and params.model = 'tree'"; order_by metrics.acc DESC.
             Median of 3 after a warm-up call (the warm-up counts when it took over 1 s).
             The results are checked against the seeded data (same random seed everywhere).
  artifacts  one 50 MB file uploaded (log_file / log_artifact), then downloaded, MB/s, median of 3
  wrk        http targets, when wrk is installed: GET runs/get of a seeded run, 15 s,
             4 connections, 2 threads
The suite starts each server itself and adds: start-up from launch to the first 200 on /health
(median of 3 starts) and memory, VmRSS summed over the server's process tree after the load
(PSS too, which does not count shared pages twice). MB = 2**20 bytes.

The suite's four targets, each measured in its own process:
  MLflow embedded    mlflow.MlflowClient on a SQLite file: this script run by the MLflow
                     virtualenv's python with --client mlflow
  reprorun embedded  open_store on a SQLite file
  MLflow server      `mlflow server` on SQLite with its defaults (4 workers; --mlflow-workers),
                     measured with reprorun's client, so both servers are compared with the
                     same client. With more than one worker, uvicorn (0.54) leaves Nagle's
                     algorithm on for the connections (Kludex/uvicorn#3149): every keep-alive
                     request after the first waits ~40 ms for a delayed ACK. --mlflow-workers 1
                     measures MLflow without that.
  reprorun server    `reprorun server` on SQLite with its defaults (1 process)
The 10,000 search runs are seeded once per tool and each target gets a copy of that database:
reprorun through its store (create_run + log_batch per run); MLflow with one bulk insert through
its own table definitions (its API would take minutes), or its API if those tables moved.

Baseline: MLflow from /tmp/bench-mlflow-venv (made when missing, as bench/env_build.py does),
measured in the same session; the numbers quoted in the issue are printed for reference.
Targets: every rate at least 10x MLflow's (embedded against embedded, server against server);
order_by on a metric under 50 ms at 10,000 runs; server start-up under 1 s; server memory under
150 MB; artifacts no slower than MLflow. MLflow's telemetry is switched off
(MLFLOW_DISABLE_TELEMETRY=true): a bench sends nothing anywhere.
--quick (CI smoke): 0.5 s per rate, one repeat, 1,000 search runs, 5 MB, wrk 3 s, one start.
--work-dir /dev/shm keeps the databases off the disk: SQLite's fsyncs cost MLflow (rollback
journal, synchronous=FULL) far more than reprorun (WAL, synchronous=NORMAL) on a slow disk.
The machine should be otherwise idle: the table reports how much CPU other processes used.

This file imports only the standard library at the top: the MLflow virtualenv runs it too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

HERE = Path(__file__).resolve().parent
MLFLOW_VENV = Path("/tmp/bench-mlflow-venv")  # the same as env_build.MLFLOW_VENV
MiB = 1024 * 1024
WARMUP_CALLS = 3
BATCH_POINTS = 1000  # metrics per log_batch call: MLflow's limit for one request
SEARCH_RESULTS = 100
SEARCH_FILTER = "metrics.acc > 0.9 and params.model = 'tree'"
SEARCH_ORDER = "metrics.acc DESC"
SEARCHES: dict[str, tuple[str | None, list[str] | None]] = {
    "search_none": (None, None),
    "search_filter": (SEARCH_FILTER, None),
    "search_order": (None, [SEARCH_ORDER]),
}
SEEDED_TAG = "bench.seeded"
MODELS = ("tree", "linear", "forest", "knn")
RATE_TARGET = 10.0
ORDER_TARGET_MS = 50.0
STARTUP_TARGET_S = 1.0
MEMORY_TARGET_MB = 150.0
ISSUE_MLFLOW = (
    "MLflow 3.17.2 as quoted in the issue (median, this machine kind):\n"
    "  embedded SQLite: 128 runs/s, 295 log_metric/s, 5,400 batch points/s, 360 log_param/s,\n"
    "    search 31-36 ms, 5.6 s with order_by on a metric\n"
    "  through its server: 34 runs/s, 112 log_metric/s, 4,300 batch points/s, 132 log_param/s,\n"
    "    search 89 ms (5.8 s with order_by), 285/202 MB/s artifacts up/down, 6 s start-up,\n"
    "    2.3 GB across 10 processes, 100-139 req/s under wrk"
)


@dataclass(frozen=True)
class Budget:
    seconds: float = 3.0  # per rate, per repeat
    max_calls: int = 20_000
    repeats: int = 3
    search_runs: int = 10_000
    artifact_mb: int = 50
    wrk_seconds: int = 15
    starts: int = 3


FULL = Budget()
QUICK = Budget(
    seconds=0.5,
    max_calls=2_000,
    repeats=1,
    search_runs=1_000,
    artifact_mb=5,
    wrk_seconds=3,
    starts=1,
)

Point = tuple[str, float, int, int]  # key, value, timestamp (ms), step


def now_ms() -> int:
    return int(time.time() * 1000)


def say(message: str) -> None:
    print(message, flush=True)


# --- the data every search target is seeded with ------------------------------------------


@dataclass(frozen=True)
class SeedRun:
    name: str
    start_time: int
    params: dict[str, str]
    tags: dict[str, str]
    acc: float
    loss: float


def seed_runs(n: int) -> list[SeedRun]:
    """The same runs for every tool: a fixed random seed."""
    return list(iter_seed_runs(n))


def iter_seed_runs(n: int) -> Iterator[SeedRun]:
    """seed_runs(n), one at a time (a million runs do not fit in memory as a list)."""
    rng = random.Random(20240601)
    base = 1_700_000_000_000
    for i in range(n):
        params = {
            "model": rng.choice(MODELS),
            "lr": str(rng.choice((0.1, 0.01, 0.001))),
            "depth": str(rng.randint(2, 12)),
        }
        tags = {"team": rng.choice(("vision", "nlp", "tabular"))}
        yield SeedRun(f"seed-{i:05d}", base + i * 1000, params, tags, rng.random(), rng.random())


# --- clients: the same operations through reprorun's store or MLflow's client ----------------


class Client(Protocol):
    def experiment(self, name: str) -> str: ...

    def is_seeded(self, experiment_id: str) -> bool: ...

    def mark_seeded(self, experiment_id: str) -> None: ...

    def seed(self, experiment_id: str, runs: Sequence[SeedRun]) -> None: ...

    def new_run(self, experiment_id: str) -> str: ...

    def create_end(self, experiment_id: str, name: str) -> None: ...

    def log_metric(self, run_id: str, point: Point) -> None: ...

    def log_batch(self, run_id: str, points: Sequence[Point]) -> None: ...

    def log_param(self, run_id: str, key: str, value: str) -> None: ...

    def search(
        self, experiment_id: str, filter_string: str | None, order_by: list[str] | None
    ) -> list[tuple[str, float | None]]:
        """(run id, acc) of each run found, at most SEARCH_RESULTS."""
        ...

    def upload(self, run_id: str, file: Path) -> None: ...

    def download(self, run_id: str, name: str, dest: Path) -> Path: ...


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


class ReprorunClient:
    """reprorun's store API: SqlStore for a database, RestStore for a server."""

    def __init__(self, uri: str):
        from reprorun.tracking import artifacts
        from reprorun.tracking.entities import Metric, RunStatus
        from reprorun.tracking.store import open_store

        self.uri = uri
        self.store = open_store(uri)
        self.artifacts = artifacts
        self.metric = Metric
        self.finished = RunStatus.FINISHED
        self.tracking_uri = uri if is_http(uri) else None

    def experiment(self, name: str) -> str:
        return str(self.store.get_or_create_experiment(name))

    def is_seeded(self, experiment_id: str) -> bool:
        return self.store.get_experiment(experiment_id).tags.get(SEEDED_TAG) == "true"

    def mark_seeded(self, experiment_id: str) -> None:
        self.store.set_experiment_tag(experiment_id, SEEDED_TAG, "true")

    def seed(self, experiment_id: str, runs: Sequence[SeedRun]) -> None:
        for r in runs:
            run = self.store.create_run(
                experiment_id,
                run_name=r.name,
                start_time=r.start_time,
                tags=r.tags,
                params=r.params,
            )
            metrics = [
                self.metric("acc", r.acc, r.start_time, 0),
                self.metric("loss", r.loss, r.start_time, 0),
            ]
            self.store.log_batch(run.info.run_id, metrics=metrics)

    def new_run(self, experiment_id: str) -> str:
        return str(self.store.create_run(experiment_id).info.run_id)

    def create_end(self, experiment_id: str, name: str) -> None:
        run = self.store.create_run(experiment_id, run_name=name)
        self.store.update_run(run.info.run_id, status=self.finished, end_time=now_ms())

    def log_metric(self, run_id: str, point: Point) -> None:
        self.store.log_metric(run_id, self.metric(*point))

    def log_batch(self, run_id: str, points: Sequence[Point]) -> None:
        self.store.log_batch(run_id, metrics=[self.metric(*p) for p in points])

    def log_param(self, run_id: str, key: str, value: str) -> None:
        self.store.log_param(run_id, key, value)

    def search(
        self, experiment_id: str, filter_string: str | None, order_by: list[str] | None
    ) -> list[tuple[str, float | None]]:
        runs = self.store.search_runs(
            [experiment_id], filter_string, max_results=SEARCH_RESULTS, order_by=order_by
        )
        return [(r.info.run_id, r.data.metrics.get("acc")) for r in runs]

    def _artifact_uri(self, run_id: str) -> str:
        return str(self.store.get_run(run_id).info.artifact_uri)

    def upload(self, run_id: str, file: Path) -> None:
        uri = self._artifact_uri(run_id)
        self.artifacts.log_file(uri, file, None, tracking_uri=self.tracking_uri)

    def download(self, run_id: str, name: str, dest: Path) -> Path:
        uri = self._artifact_uri(run_id)
        return Path(self.artifacts.download(uri, name, dest, tracking_uri=self.tracking_uri))


class MlflowClientAdapter:
    """MLflow's own client (``mlflow.MlflowClient``); run by the MLflow virtualenv's python."""

    def __init__(self, uri: str):
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param, RunTag

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.metric, self.param, self.tag = Metric, Param, RunTag
        self.artifact_root: str | None = None
        if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the cwd
            self.artifact_root = (Path(uri[len("sqlite:///") :]).parent / "mlflow-art").as_uri()

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = f"{self.artifact_root}/{name}" if self.artifact_root else None
        return str(self.client.create_experiment(name, artifact_location=location))

    def is_seeded(self, experiment_id: str) -> bool:
        return bool(self.client.get_experiment(experiment_id).tags.get(SEEDED_TAG) == "true")

    def mark_seeded(self, experiment_id: str) -> None:
        self.client.set_experiment_tag(experiment_id, SEEDED_TAG, "true")

    def seed(self, experiment_id: str, runs: Sequence[SeedRun]) -> None:
        try:
            self._bulk_seed(experiment_id, runs)
        except (ImportError, AttributeError) as exc:  # MLflow moved its tables: the slow way
            say(f"  (MLflow bulk insert unavailable: {exc!r}; seeding through its API)")
            for r in runs:
                run = self.client.create_run(
                    experiment_id, start_time=r.start_time, tags=r.tags, run_name=r.name
                )
                self.client.log_batch(
                    run.info.run_id,
                    metrics=[
                        self.metric("acc", r.acc, r.start_time, 0),
                        self.metric("loss", r.loss, r.start_time, 0),
                    ],
                    params=[self.param(k, v) for k, v in r.params.items()],
                )

    def _bulk_seed(self, experiment_id: str, runs: Sequence[SeedRun]) -> None:
        """What MLflow's create_run + log_batch write, inserted in one transaction through its
        own SQLAlchemy tables."""
        from mlflow.store.tracking.dbmodels.models import (
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlRun,
            SqlTag,
        )

        store = self.client._tracking_client.store
        location = self.client.get_experiment(experiment_id).artifact_location
        run_rows: list[dict[str, Any]] = []
        tag_rows: list[dict[str, Any]] = []
        param_rows: list[dict[str, Any]] = []
        metric_rows: list[dict[str, Any]] = []
        for r in runs:
            run_id = uuid.uuid4().hex
            run_rows.append(
                {
                    "run_uuid": run_id,
                    "name": r.name,
                    "source_type": "UNKNOWN",
                    "source_name": "",
                    "entry_point_name": "",
                    "user_id": "bench",
                    "status": "RUNNING",
                    "start_time": r.start_time,
                    "end_time": None,
                    "deleted_time": None,
                    "source_version": "",
                    "lifecycle_stage": "active",
                    "artifact_uri": f"{location}/{run_id}/artifacts",
                    "experiment_id": int(experiment_id),
                }
            )
            tags = {**r.tags, "mlflow.runName": r.name, "mlflow.user": "bench"}
            tag_rows += [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()]
            param_rows += [{"key": k, "value": v, "run_uuid": run_id} for k, v in r.params.items()]
            for key, value in (("acc", r.acc), ("loss", r.loss)):
                metric_rows.append(
                    {
                        "key": key,
                        "value": value,
                        "timestamp": r.start_time,
                        "step": 0,
                        "is_nan": False,
                        "run_uuid": run_id,
                    }
                )
        try:
            session_maker = store.ManagedSessionMaker(read_only=False)
        except TypeError:  # older MLflow: no read_only argument
            session_maker = store.ManagedSessionMaker()
        with session_maker as session:
            for model, rows in (
                (SqlRun, run_rows),
                (SqlTag, tag_rows),
                (SqlParam, param_rows),
                (SqlMetric, metric_rows),
                (SqlLatestMetric, metric_rows),
            ):
                session.execute(model.__table__.insert(), rows)

    def new_run(self, experiment_id: str) -> str:
        return str(self.client.create_run(experiment_id).info.run_id)

    def create_end(self, experiment_id: str, name: str) -> None:
        run = self.client.create_run(experiment_id, run_name=name)
        self.client.set_terminated(run.info.run_id, "FINISHED", end_time=now_ms())

    def log_metric(self, run_id: str, point: Point) -> None:
        key, value, timestamp, step = point
        self.client.log_metric(run_id, key, value, timestamp=timestamp, step=step)

    def log_batch(self, run_id: str, points: Sequence[Point]) -> None:
        self.client.log_batch(run_id, metrics=[self.metric(*p) for p in points])

    def log_param(self, run_id: str, key: str, value: str) -> None:
        self.client.log_param(run_id, key, value)

    def search(
        self, experiment_id: str, filter_string: str | None, order_by: list[str] | None
    ) -> list[tuple[str, float | None]]:
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=filter_string or "",
            max_results=SEARCH_RESULTS,
            order_by=order_by,
        )
        return [(r.info.run_id, r.data.metrics.get("acc")) for r in runs]

    def upload(self, run_id: str, file: Path) -> None:
        self.client.log_artifact(run_id, str(file))

    def download(self, run_id: str, name: str, dest: Path) -> Path:
        return Path(self.client.download_artifacts(run_id, name, str(dest)))


# --- measuring one target --------------------------------------------------------------------


def median_rate(budget: Budget, setup: Callable[[], Callable[[int], int]]) -> float:
    """Items per second: ``setup()`` gives a fresh step function per repeat; ``step(i)`` does
    call i and returns how many items it wrote. Median over the repeats."""
    rates = []
    for _ in range(budget.repeats):
        step = setup()
        for i in range(WARMUP_CALLS):
            step(i)
        items = calls = 0
        start = time.perf_counter()
        deadline = start + budget.seconds
        while calls < budget.max_calls:
            items += step(WARMUP_CALLS + calls)
            calls += 1
            if time.perf_counter() >= deadline:
                break
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)


def measure_rates(client: Client, budget: Budget) -> dict[str, float]:
    exp = client.experiment(f"bench-rates-{uuid.uuid4().hex[:8]}")

    def create_end() -> Callable[[int], int]:
        def step(i: int) -> int:
            client.create_end(exp, f"run-{i}")
            return 1

        return step

    def log_metric() -> Callable[[int], int]:
        run = client.new_run(exp)

        def step(i: int) -> int:
            client.log_metric(run, ("loss", 1.0 / (i + 1), now_ms(), i))
            return 1

        return step

    def log_batch() -> Callable[[int], int]:
        run = client.new_run(exp)
        keys = [f"m{k}" for k in range(10)]
        per_key = BATCH_POINTS // len(keys)

        def step(i: int) -> int:
            t = now_ms()
            points = [
                (key, (i * per_key + s) * 0.001, t, i * per_key + s)
                for key in keys
                for s in range(per_key)
            ]
            client.log_batch(run, points)
            return len(points)

        return step

    def log_param() -> Callable[[int], int]:
        run = client.new_run(exp)

        def step(i: int) -> int:
            client.log_param(run, f"p{i}", str(i))
            return 1

        return step

    rates = {}
    for key, setup in (
        ("create_end", create_end),
        ("log_metric", log_metric),
        ("log_batch", log_batch),
        ("log_param", log_param),
    ):
        rates[key] = median_rate(budget, setup)
        say(f"  {key}: {rates[key]:,.0f}/s")
    return rates


def seeded_experiment(client: Client, n: int) -> str:
    """The experiment holding the n search runs, seeding it when it is new."""
    exp = client.experiment(f"bench-search-{n}")
    if client.is_seeded(exp):
        return exp
    if client.search(exp, None, None):
        sys.exit(f"experiment bench-search-{n} is partly seeded (an interrupted seed?); delete it")
    say(f"  seeding {n:,} runs ...")
    start = time.perf_counter()
    client.seed(exp, seed_runs(n))
    client.mark_seeded(exp)
    say(f"  seeded in {time.perf_counter() - start:.1f} s")
    return exp


def check_search(key: str, found: list[tuple[str, float | None]], n: int) -> str | None:
    """Whether a search found what the seeded data says it must; a message when not."""
    runs = seed_runs(n)
    if key == "search_filter":
        matching = [r.acc for r in runs if r.acc > 0.9 and r.params["model"] == "tree"]
        ok = len(found) == min(SEARCH_RESULTS, len(matching)) and all(
            a is not None and a > 0.9 for _, a in found
        )
    elif key == "search_order":
        expected = sorted((r.acc for r in runs), reverse=True)[:SEARCH_RESULTS]
        got = [a for _, a in found]
        ok = len(got) == len(expected) and all(
            a is not None and abs(a - e) < 1e-9 for a, e in zip(got, expected, strict=True)
        )
    else:
        ok = len(found) == min(SEARCH_RESULTS, n)
    return None if ok else f"{key}: unexpected result ({len(found)} runs)"


def measure_search(client: Client, budget: Budget) -> tuple[dict[str, float], str, list[str]]:
    """Median latency (ms) of each search, a seeded run id, and failed result checks."""
    exp = seeded_experiment(client, budget.search_runs)
    latencies: dict[str, float] = {}
    problems: list[str] = []
    run_id = ""
    for key, (filter_string, order_by) in SEARCHES.items():

        def timed_search(
            filter_string: str | None = filter_string, order_by: list[str] | None = order_by
        ) -> tuple[float, list[tuple[str, float | None]]]:
            start = time.perf_counter()
            found = client.search(exp, filter_string, order_by)
            return time.perf_counter() - start, found

        first, found = timed_search()  # a warm-up, unless slow enough that caches do not matter
        times = [first] if first >= 1.0 else []
        while len(times) < budget.repeats:
            seconds, found = timed_search()
            times.append(seconds)
        latencies[key] = statistics.median(times) * 1000
        problem = check_search(key, found, budget.search_runs)
        if problem:
            problems.append(problem)
        run_id = run_id or (found[0][0] if found else "")
        say(f"  {key}: {latencies[key]:,.1f} ms" + (f"  ({problem})" if problem else ""))
    return latencies, run_id, problems


def make_file(path: Path, mb: int) -> Path:
    block = os.urandom(MiB)
    with open(path, "wb") as out:
        for _ in range(mb):
            out.write(block)
    return path


def measure_artifacts(client: Client, budget: Budget, work: Path) -> dict[str, float]:
    exp = client.experiment(f"bench-artifacts-{uuid.uuid4().hex[:8]}")
    data = make_file(work / "artifact.bin", budget.artifact_mb)
    up, down = [], []
    for i in range(budget.repeats):
        run = client.new_run(exp)
        start = time.perf_counter()
        client.upload(run, data)
        up.append(budget.artifact_mb / (time.perf_counter() - start))
        dest = work / f"download-{i}"
        dest.mkdir()
        start = time.perf_counter()
        got = client.download(run, data.name, dest)
        down.append(budget.artifact_mb / (time.perf_counter() - start))
        if got.stat().st_size != data.stat().st_size:
            sys.exit(f"downloaded {got} has {got.stat().st_size} bytes, not {data.stat().st_size}")
        shutil.rmtree(dest)
    data.unlink()
    result = {"upload": statistics.median(up), "download": statistics.median(down)}
    say(f"  artifacts: up {result['upload']:,.0f} MB/s, down {result['download']:,.0f} MB/s")
    return result


def run_wrk(base_url: str, run_id: str, seconds: int) -> dict[str, Any]:
    url = f"{base_url.rstrip('/')}/api/2.0/mlflow/runs/get?run_id={run_id}"
    argv = ["wrk", "-t2", "-c4", f"-d{seconds}s", "--timeout", "10s", url]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if rate is None:
        sys.exit(f"wrk printed no Requests/sec:\n{done.stdout}{done.stderr}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", done.stdout)
    errors = re.search(r"Socket errors:(.*)", done.stdout)
    result = {
        "wrk": float(rate.group(1)),
        "wrk_non_2xx": int(bad.group(1)) if bad else 0,
        "wrk_socket_errors": errors.group(1).strip() if errors else "",
    }
    note = f" ({result['wrk_non_2xx']} non-2xx)" if result["wrk_non_2xx"] else ""
    say(f"  wrk runs/get: {result['wrk']:,.0f} req/s{note}")
    return result


def measure(uri: str, client_kind: str, budget: Budget, work: Path) -> dict[str, Any]:
    """Every client-side measure of one target."""
    client: Client = MlflowClientAdapter(uri) if client_kind == "mlflow" else ReprorunClient(uri)
    result: dict[str, Any] = {"uri": uri, "client": client_kind}
    result.update(measure_rates(client, budget))
    latencies, run_id, problems = measure_search(client, budget)
    result.update(latencies)
    result["problems"] = problems
    result.update(measure_artifacts(client, budget, work))
    if is_http(uri) and shutil.which("wrk") and run_id:
        result.update(run_wrk(uri, run_id, budget.wrk_seconds))
    return result


# --- servers: start-up, memory --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health_ok(port: int) -> bool:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_server(
    argv: list[str], env: dict[str, str], port: int, log: Path
) -> tuple[subprocess.Popen[bytes], float, float]:
    """Launch a server in its own process group. Returns it, the seconds until /health
    answered 200, and the seconds until its process tree went idle (workers that start after
    the first answer have started too): under 5% of a core over half a second."""
    with open(log, "ab") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def check() -> None:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            sys.exit(f"`{' '.join(argv)}` exited {proc.returncode}:\n{tail}")
        if time.perf_counter() - start > 180:
            stop_server(proc)
            sys.exit(f"`{' '.join(argv)}` did not answer /health or settle within 180 s")

    while not health_ok(port):
        check()
        time.sleep(0.005)
    healthy = time.perf_counter() - start
    window = 0.5
    while True:
        check()
        before = (time.perf_counter(), tree_cpu_seconds(proc.pid))
        time.sleep(window)
        if tree_cpu_seconds(proc.pid) - before[1] < 0.05 * window:
            return proc, healthy, before[0] - start


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def _kib(path: Path, field: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(pid: int) -> dict[str, float]:
    pids = process_tree(pid)
    rss = sum(_kib(Path(f"/proc/{p}/status"), "VmRSS") for p in pids)
    pss = sum(_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in pids)
    return {"memory": rss / 1024, "memory_pss": pss / 1024, "processes": len(pids)}


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
BUSY_CORES = 0.25  # other work above this, on average, makes a target's numbers unreliable


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (not idle or waiting on I/O)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_cpu_seconds(server_pids: list[int]) -> float:
    """CPU time of this process, its waited-for children, and the servers' process trees."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total + sum(tree_cpu_seconds(pid) for pid in server_pids)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process tree's living processes."""
    total = 0.0
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / CLOCK_TICKS  # utime, stime
    return total


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """End the server's process group (ours: started with a new session), then any of its
    processes that left the group."""
    tree = process_tree(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for p in tree[1:]:
        if Path(f"/proc/{p}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


# --- the suite --------------------------------------------------------------------------------


def copy_db(src: Path, dest: Path) -> Path:
    """A consistent copy of a SQLite database (WAL included), by SQLite's backup API."""
    source, target = sqlite3.connect(src), sqlite3.connect(dest)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return dest


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


class Suite:
    def __init__(self, root: Path, budget: Budget, quick: bool, mlflow_workers: int | None):
        self.root = root
        self.budget = budget
        self.quick = quick
        self.mlflow_workers = mlflow_workers
        base = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
        base["REPRORUN_HOME"] = str(root / "reprorun-home")
        base["MLFLOW_DISABLE_TELEMETRY"] = "true"
        self.env = base
        self.mlflow_env = {**base, "PATH": f"{MLFLOW_VENV / 'bin'}{os.pathsep}{base['PATH']}"}

    def script(self, python: str, *args: str) -> list[str]:
        return [python, str(Path(__file__).resolve()), *args, *(["--quick"] if self.quick else [])]

    def target(
        self,
        label: str,
        python: str,
        client: str,
        uri: str,
        env: dict[str, str],
        server_pid: int | None = None,
    ) -> dict[str, Any]:
        """One target measured in its own process, by this script. Also how busy the machine
        was with other work meanwhile: all CPU time minus ours (this process tree's and the
        server's), in cores."""
        say(f"\n== {label} ({uri}, {client}'s client)")
        out = self.root / f"{uuid.uuid4().hex}.json"
        argv = self.script(python, "--tracking-uri", uri, "--client", client, "--json", str(out))
        servers = [server_pid] if server_pid else []
        before = (time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds(servers))
        subprocess.run(argv, env=env, check=True, cwd=self.root)
        after = (time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds(servers))
        result: dict[str, Any] = json.loads(out.read_text())
        others = (after[1] - before[1]) - (after[2] - before[2])
        result["other_cores"] = max(0.0, others / (after[0] - before[0]))
        return result

    def seed(self, label: str, python: str, client: str, env: dict[str, str]) -> Path:
        db = self.root / f"{label}-seed.db"
        say(f"\n== seeding {self.budget.search_runs:,} runs for {label}")
        argv = self.script(
            python, "--seed-only", "--tracking-uri", sqlite_uri(db), "--client", client
        )
        subprocess.run(argv, env=env, check=True, cwd=self.root)
        return db

    def server(
        self, label: str, argv_for: Callable[[int], list[str]], env: dict[str, str]
    ) -> dict[str, Any]:
        log = self.root / f"{label.replace(' ', '-')}.log"
        starts, settles = [], []
        proc = None
        port = 0
        for _ in range(self.budget.starts):
            if proc is not None:
                stop_server(proc)
            port = free_port()
            proc, healthy, settled = start_server(argv_for(port), env, port, log)
            starts.append(healthy)
            settles.append(settled)
        assert proc is not None
        say(
            f"\n{label}: first /health 200 after {', '.join(f'{s:.2f}' for s in starts)} s; "
            f"idle after {', '.join(f'{s:.1f}' for s in settles)} s"
        )
        idle = tree_memory(proc.pid)
        try:
            uri = f"http://127.0.0.1:{port}"
            result = self.target(label, sys.executable, "reprorun", uri, self.env, proc.pid)
            result["startup"] = statistics.median(starts)
            result["settled"] = statistics.median(settles)
            result["memory_idle"] = idle["memory"]
            result.update(tree_memory(proc.pid))
            say(
                f"  memory: {result['memory']:,.0f} MB RSS ({result['memory_pss']:,.0f} MB PSS) "
                f"in {result['processes']} processes; {idle['memory']:,.0f} MB RSS before the load"
            )
        finally:
            stop_server(proc)
        return result

    def reprorun(self) -> dict[str, dict[str, Any]]:
        from run_overhead import reprorun_argv

        seeded = self.seed("reprorun", sys.executable, "reprorun", self.env)
        embedded_db = copy_db(seeded, self.root / "reprorun-embedded.db")
        server_db = copy_db(seeded, self.root / "reprorun-server.db")
        results = {
            "rr_emb": self.target(
                "reprorun embedded", sys.executable, "reprorun", str(embedded_db), self.env
            )
        }
        art = self.root / "reprorun-server-artifacts"

        def argv(port: int) -> list[str]:
            return [
                *reprorun_argv(),
                "server",
                "--port",
                str(port),
                "--backend-store-uri",
                sqlite_uri(server_db),
                "--artifacts-destination",
                str(art),
            ]

        results["rr_srv"] = self.server("reprorun server", argv, self.env)
        return results

    def mlflow(self) -> dict[str, dict[str, Any]]:
        python = str(MLFLOW_VENV / "bin" / "python")
        seeded = self.seed("mlflow", python, "mlflow", self.mlflow_env)
        embedded_db = copy_db(seeded, self.root / "mlflow-embedded.db")
        server_db = copy_db(seeded, self.root / "mlflow-server.db")
        results = {
            "ml_emb": self.target(
                "MLflow embedded", python, "mlflow", sqlite_uri(embedded_db), self.mlflow_env
            )
        }
        art = self.root / "mlflow-server-artifacts"

        def argv(port: int) -> list[str]:
            return [
                str(MLFLOW_VENV / "bin" / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                sqlite_uri(server_db),
                "--artifacts-destination",
                str(art),
                *(["--workers", str(self.mlflow_workers)] if self.mlflow_workers else []),
            ]

        results["ml_srv"] = self.server("MLflow server", argv, self.mlflow_env)
        return results


def filesystem(path: Path) -> str:
    """The mount point and type holding ``path``: fsync costs differ (disk or tmpfs)."""
    best = ("/", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mount, kind = fields[1], fields[2]
        if path.resolve().is_relative_to(mount) and len(mount) >= len(best[0]):
            best = (mount, kind)
    return f"{best[0]} ({best[1]})"


def compile_reprorun() -> None:
    """Bytecode for reprorun, as an installed package has (see run_overhead.py)."""
    import compileall

    import reprorun

    compileall.compile_dir(str(Path(reprorun.__file__).parent), quiet=1)


# --- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    unit: str  # "/s", "ms", "MB/s", "s", "MB"
    higher_is_better: bool
    target: str = ""  # "ratio:X" (reprorun/MLflow at least X), "max:X", or "" (information)


def measures(budget: Budget) -> list[Measure]:
    n = f"{budget.search_runs:,}"
    mb = budget.artifact_mb
    rate, order = f"ratio:{RATE_TARGET}", f"max:{ORDER_TARGET_MS}"
    start, memory = f"max:{STARTUP_TARGET_S}", f"max:{MEMORY_TARGET_MB}"
    return [
        Measure("create_end", "create+end run (runs/s)", "/s", True, rate),
        Measure("log_metric", "log_metric, single calls (/s)", "/s", True, rate),
        Measure("log_batch", "log_batch points, 1,000/call (/s)", "/s", True, rate),
        Measure("log_param", "log_param calls (/s)", "/s", True, rate),
        Measure("search_none", f"search {n} runs, no filter", "ms", False),
        Measure("search_filter", "search: acc > 0.9 and model = 'tree'", "ms", False),
        Measure("search_order", "search: order_by metrics.acc DESC", "ms", False, order),
        Measure("upload", f"artifact upload, {mb} MB", "MB/s", True, "ratio:1"),
        Measure("download", f"artifact download, {mb} MB", "MB/s", True, "ratio:1"),
        Measure("startup", "server start-up to /health 200", "s", False, start),
        Measure("settled", "server start-up until idle", "s", False),
        Measure("memory_idle", "server memory before load, RSS sum", "MB", False),
        Measure("memory", "server memory after load, RSS sum", "MB", False, memory),
        Measure("wrk", f"runs/get under wrk, {budget.wrk_seconds} s, 4 conns", "/s", True, rate),
    ]


def show(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "/s":
        return f"{value:,.0f}"
    return f"{value:,.0f} {unit}"


def ratio(ours: float | None, theirs: float | None, higher_is_better: bool) -> float | None:
    if not ours or not theirs:
        return None
    return ours / theirs if higher_is_better else theirs / ours


def verdict(m: Measure, rr: dict[str, float | None], ratios: dict[str, float | None]) -> str:
    if not m.target:
        return "(information)"
    kind, _, limit_text = m.target.partition(":")
    limit = float(limit_text)
    checks: dict[str, bool] = {}
    for where in ("emb", "srv"):
        if kind == "ratio" and ratios[where] is not None:
            checks[where] = bool(ratios[where] >= limit)  # type: ignore[operator]
        elif kind == "max" and rr[where] is not None:
            checks[where] = bool(rr[where] < limit)  # type: ignore[operator]
    if not checks:
        return "-"
    failed = [w for w, ok in checks.items() if not ok]
    return "PASS" if not failed else f"FAIL ({', '.join(failed)})"


def target_text(m: Measure) -> str:
    kind, _, limit = m.target.partition(":")
    if kind == "ratio":
        return f">= {float(limit):g}x MLflow"
    if kind == "max":
        return f"< {float(limit):g} {m.unit}"
    return ""


def print_rows(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rows.insert(1, ["-" * w for w in widths])
    for cells in rows:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())


def suite_table(results: dict[str, dict[str, Any]], budget: Budget) -> None:
    header = [
        "measure",
        "MLflow embedded",
        "reprorun embedded",
        "MLflow server",
        "reprorun server",
        "ratio emb",
        "ratio srv",
        "target",
        "verdict",
    ]
    rows = [header]
    for m in measures(budget):
        values = {
            k: results.get(k, {}).get(m.key) for k in ("ml_emb", "rr_emb", "ml_srv", "rr_srv")
        }
        ratios = {
            "emb": ratio(values["rr_emb"], values["ml_emb"], m.higher_is_better),
            "srv": ratio(values["rr_srv"], values["ml_srv"], m.higher_is_better),
        }
        rr = {"emb": values["rr_emb"], "srv": values["rr_srv"]}
        cells = [m.label, *(show(values[k], m.unit) for k in values)]
        if m.key == "memory":
            cells[3:5] = [
                f"{cells[i]} ({results.get(k, {}).get('processes', '?')} proc)"
                if values[k] is not None
                else "-"
                for i, k in ((3, "ml_srv"), (4, "rr_srv"))
            ]
        cells += ["-" if r is None else f"{r:,.1f}x" for r in (ratios["emb"], ratios["srv"])]
        cells += [target_text(m), verdict(m, rr, ratios)]
        rows.append(cells)
    print()
    print_rows(rows)
    print(
        "\nratio: how many times better reprorun is (its rate / MLflow's; MLflow's time or "
        "memory / reprorun's)."
    )
    pss = [
        f"{name} {results[k]['memory_pss']:,.0f} MB"
        for k, name in (("ml_srv", "MLflow"), ("rr_srv", "reprorun"))
        if k in results and "memory_pss" in results[k]
    ]
    if pss:
        print(f"server memory as PSS (shared pages counted once): {', '.join(pss)}")
    busy = ", ".join(f"{k} {r['other_cores']:.2f}" for k, r in results.items())
    print(f"CPU used by other processes while each target ran, in cores of {CORES}: {busy}")
    if any(r["other_cores"] > BUSY_CORES for r in results.values()):
        print(f"WARNING: other work used over {BUSY_CORES} of a core: numbers are unreliable")
    for k, result in results.items():
        for problem in result.get("problems", []):
            print(f"WARNING {k}: {problem}")
        if result.get("wrk_non_2xx"):
            print(f"WARNING {k}: {result['wrk_non_2xx']} non-2xx answers under wrk")
    print()
    print(ISSUE_MLFLOW)


def single_table(result: dict[str, Any], budget: Budget) -> None:
    rows = [["measure", result["uri"]]]
    for m in measures(budget):
        if result.get(m.key) is not None:
            rows.append([m.label, show(result[m.key], m.unit)])
    print()
    print_rows(rows)
    for problem in result.get("problems", []):
        print(f"WARNING: {problem}")


# --- scale: the searches people send, at 10k, 100k and 1M runs ------------------------------

SCALE_SIZES = (10_000, 100_000, 1_000_000)
SCALE_TARGET_MS = 50.0
SCALE_PAGE = 100
# (label, filter, order_by, deep): what the UI and users send. "deep" requests the page that
# starts half-way through the result, with the page token a client holds there.
SCALE_REQUESTS: dict[str, tuple[str, str | None, list[str] | None, bool]] = {
    "first_page": ("first page, no filter", None, None, False),
    "filter_metric_param": (f"filter: {SEARCH_FILTER}", SEARCH_FILTER, None, False),
    "filter_tag": ("filter: tags.team = 'vision'", "tags.team = 'vision'", None, False),
    "order_metric": (f"order_by {SEARCH_ORDER}", None, [SEARCH_ORDER], False),
    "order_param": ("order_by params.depth ASC", None, ["params.depth ASC"], False),
    "filter_order": (
        "params.model = 'tree', order_by metrics.acc",
        "params.model = 'tree'",
        ["metrics.acc ASC"],
        False,
    ),
    "deep_page": (f"page at run n/2, order_by {SEARCH_ORDER}", None, [SEARCH_ORDER], True),
}
WALK_PAGE = 10_000  # the page size a client walks with to reach the deep page (MLflow's)
MLFLOW_CACHED_VENV = Path.home() / ".cache" / "reprorun-tests" / "mlflow-3.17.2"


def scale_search(
    client: Any,
    exp: str,
    filter_string: str | None,
    order_by: list[str] | None,
    *,
    max_results: int,
    token: str | None,
) -> tuple[list[tuple[str, float | None]], str | None]:
    """One page through either client: (run id, acc) of each run, and the next page's token."""
    if isinstance(client, ReprorunClient):
        page = client.store.search_runs(
            [exp], filter_string, max_results=max_results, order_by=order_by, page_token=token
        )
    else:
        page = client.client.search_runs(
            [exp],
            filter_string=filter_string or "",
            max_results=max_results,
            order_by=order_by,
            page_token=token,
        )
    return [(r.info.run_id, r.data.metrics.get("acc")) for r in page], page.token


def deep_token(client: Any, exp: str, order_by: list[str] | None, depth: int) -> str | None:
    """The token a client holds after reading ``depth`` runs, walked page by page."""
    token = None
    read = 0
    while read < depth:
        size = min(WALK_PAGE, depth - read)
        found, token = scale_search(client, exp, None, order_by, max_results=size, token=token)
        read += len(found)
        if not token:
            break
    return token


def check_scale(key: str, found: list[tuple[str, float | None]], n: int) -> str | None:
    """Whether a scale request found what the seeded data says (streamed: 1M runs)."""
    accs = [a for _, a in found]
    if any(a is None for a in accs):
        return f"{key}: a run without acc"
    if key in ("order_metric", "deep_page"):
        every = sorted((r.acc for r in iter_seed_runs(n)), reverse=True)
        start = n // 2 if key == "deep_page" else 0
        expected = every[start : start + SCALE_PAGE]
        ok = len(accs) == len(expected) and all(
            a is not None and abs(a - e) < 1e-12 for a, e in zip(accs, expected, strict=True)
        )
        return None if ok else f"{key}: not the runs ranked {start + 1} to {start + SCALE_PAGE}"
    if key == "filter_order":
        every = sorted(r.acc for r in iter_seed_runs(n) if r.params["model"] == "tree")
        ok = accs == every[:SCALE_PAGE]
        return None if ok else f"{key}: not the lowest acc of the 'tree' runs"
    if key == "order_param":
        depths = sorted(r.params["depth"] for r in iter_seed_runs(n))[:SCALE_PAGE]
        return None if len(found) == len(depths) else f"{key}: {len(found)} runs"
    return None if len(found) == SCALE_PAGE else f"{key}: {len(found)} runs, not {SCALE_PAGE}"


def measure_scale(client: Any, n: int, repeats: int) -> dict[str, Any]:
    """Median latency (ms) of each scale request on the seeded experiment of n runs."""
    exp = seeded_experiment(client, n)
    result: dict[str, Any] = {"problems": []}
    for key, (label, filter_string, order_by, deep) in SCALE_REQUESTS.items():
        token = deep_token(client, exp, order_by, n // 2) if deep else None
        times: list[float] = []
        found: list[tuple[str, float | None]] = []
        calls = 0
        # The first call is a warm-up, unless slow enough that caches do not matter; over a
        # second a call, three calls are enough (MLflow's sorts take ~10 s at 10k runs).
        while len(times) < (repeats if not times or times[0] < 1.0 else 3):
            start = time.perf_counter()
            found, _ = scale_search(
                client, exp, filter_string, order_by, max_results=SCALE_PAGE, token=token
            )
            seconds = time.perf_counter() - start
            calls += 1
            if calls > 1 or seconds >= 1.0:
                times.append(seconds)
        result[key] = statistics.median(times) * 1000
        problem = check_scale(key, found, n)
        if problem:
            result["problems"].append(problem)
        say(f"  {label}: {result[key]:,.1f} ms" + (f"  ({problem})" if problem else ""))
    if isinstance(client, ReprorunClient):
        store: Any = client.store  # the SqlStore: run_keys is what /ui-api/keys answers with
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            keys = store.run_keys([exp])
            times.append(time.perf_counter() - start)
        result["keys"] = statistics.median(times[1:]) * 1000
        if sorted(keys["metrics"]) != ["acc", "loss"]:
            result["problems"].append(f"keys: {keys}")
        say(f"  /ui-api/keys (run_keys): {result['keys']:,.1f} ms")
    return result


def postgres_schema_url(url: str, schema: str) -> str:
    """``url`` with ``schema`` first on the search path (created when missing)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    from reprorun.tracking.store.database import _with_driver

    url = _with_driver(url)  # the installed driver (SQLAlchemy 2.1 assumes psycopg 3)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    finally:
        engine.dispose()
    parsed = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)


def drop_postgres_schema(url: str, schema: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from reprorun.tracking.store.database import _with_driver

    engine = create_engine(_with_driver(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        engine.dispose()


def mlflow_python(given: str | None) -> str | None:
    for candidate in (given, MLFLOW_VENV / "bin" / "python", MLFLOW_CACHED_VENV / "bin" / "python"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def scale_target(
    python: str, client: str, uri: str, n: int, quick: bool, env: dict[str, str]
) -> dict[str, Any]:
    """One target measured by this script in a process of its own (the MLflow venv's for
    MLflow)."""
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        out = Path(tmp) / "result.json"
        argv = [
            python,
            str(Path(__file__).resolve()),
            "--tracking-uri",
            uri,
            "--client",
            client,
            "--scale-measure",
            str(n),
            "--json",
            str(out),
            *(["--quick"] if quick else []),
        ]
        before = (time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds([]))
        subprocess.run(argv, env=env, check=True)
        after = (time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds([]))
        result: dict[str, Any] = json.loads(out.read_text())
        others = (after[1] - before[1]) - (after[2] - before[2])
        result["other_cores"] = max(0.0, others / (after[0] - before[0]))
        return result


def run_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Seed and measure every backend and size; returns {column: result}."""
    from seed_runs import seed

    sizes = [10_000] if args.quick else [int(x) for x in args.scale_runs.split(",")]
    backends = [b.strip() for b in args.scale_backends.split(",") if b.strip()]
    pg_url = args.postgres_url or os.environ.get("REPRORUN_TEST_POSTGRES_URL")
    if "postgresql" in backends and not pg_url:
        sys.exit(
            "--scale on postgresql needs --postgres-url (or REPRORUN_TEST_POSTGRES_URL): a "
            "database the user may create schemas in; or pass --scale-backends sqlite"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    keep = args.scale_dir is not None
    root = Path(args.scale_dir or tempfile.mkdtemp(prefix="scale-bench-", dir=args.work_dir))
    root.mkdir(parents=True, exist_ok=True)
    env["REPRORUN_HOME"] = str(root / "reprorun-home")
    results: dict[str, Any] = {}
    schemas: list[str] = []
    try:
        if not args.skip_mlflow:
            python = mlflow_python(args.mlflow_python)
            if python is None:
                from env_build import install_mlflow

                say(f"MLflow {install_mlflow()} in {MLFLOW_VENV}")
                python = str(MLFLOW_VENV / "bin" / "python")
            say(f"\n== MLflow embedded, SQLite, 10,000 runs ({python})")
            uri = sqlite_uri(root / "mlflow-10000.db")
            results["mlflow-sqlite-10000"] = scale_target(
                python, "mlflow", uri, 10_000, args.quick, env
            )
        for backend in backends:
            for n in sizes:
                if backend == "sqlite":
                    uri = str(root / f"reprorun-{n}.db")
                else:
                    assert pg_url is not None
                    schema = f"bench_scale_{n}"
                    schemas.append(schema)
                    uri = postgres_schema_url(pg_url, schema)
                say(f"\n== reprorun, {backend}, {n:,} runs")
                start = time.perf_counter()
                seed(uri, n)
                say(f"  store ready in {time.perf_counter() - start:.0f} s")
                results[f"reprorun-{backend}-{n}"] = scale_target(
                    sys.executable, "reprorun", uri, n, args.quick, env
                )
    finally:
        if keep:
            say(
                f"\nseeded stores kept in {root}"
                + (f" and PostgreSQL schemas {', '.join(schemas)}" if schemas else "")
            )
        else:
            shutil.rmtree(root, ignore_errors=True)
            for schema in schemas:
                assert pg_url is not None
                drop_postgres_schema(pg_url, schema)
    return results


def scale_table(results: dict[str, Any]) -> bool:
    """Print the table; True when every reprorun request at the largest size is under target."""
    columns = list(results)
    largest = max(
        (int(c.rsplit("-", 1)[1]) for c in columns if c.startswith("reprorun")), default=0
    )

    def title(column: str) -> str:
        tool, backend, n = column.split("-")
        size = f"{int(n) // 1000:,}k" if int(n) < 1_000_000 else f"{int(n) // 1_000_000}M"
        who = "MLflow" if tool == "mlflow" else "rr"
        return f"{who} {'PG' if backend == 'postgresql' else 'SQLite'} {size}"

    rows = [["request (ms, median)", *(title(c) for c in columns), "target", "verdict"]]
    labels = {k: v[0] for k, v in SCALE_REQUESTS.items()}
    labels["keys"] = "/ui-api/keys (run_keys)"
    ok = True
    for key, label in labels.items():
        cells = [label]
        for c in columns:
            value = results[c].get(key)
            cells.append("-" if value is None else f"{value:,.1f}")
        at_largest = [
            results[c][key]
            for c in columns
            if c.startswith("reprorun") and c.endswith(f"-{largest}") and key in results[c]
        ]
        passed = bool(at_largest) and all(v < SCALE_TARGET_MS for v in at_largest)
        ok = ok and passed
        cells += [f"< {SCALE_TARGET_MS:g} at {largest:,}", "PASS" if passed else "FAIL"]
        rows.append(cells)
    print()
    print_rows(rows)
    print(
        f"\n{SCALE_PAGE} runs a page; each request timed {SCALE_REPEATS} times after a warm-up "
        "(--quick: 3). rr = reprorun, embedded store (open_store), one process per column;\n"
        "MLflow = mlflow.MlflowClient on its SQLite store (the same seeded runs). PostgreSQL is "
        "VACUUMed and ANALYZEd after seeding (as autovacuum does);\nSQLite has no statistics "
        "(as every store)."
    )
    busy = ", ".join(f"{title(c)} {results[c].get('other_cores', 0):.2f}" for c in columns)
    print(
        f"CPU used by other processes while each column was measured (PostgreSQL's server "
        f"included), in cores of {CORES}: {busy}"
    )
    if any(results[c].get("other_cores", 0) > BUSY_CORES for c in columns):
        print(f"WARNING: other work used over {BUSY_CORES} of a core: numbers are unreliable")
    for c in columns:
        for problem in results[c].get("problems", []):
            print(f"WARNING {c}: {problem}")
    return ok


SCALE_REPEATS = 7


# --- entry point ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracking-uri", help="measure this one target (database or http)")
    parser.add_argument("--client", choices=("reprorun", "mlflow"), default="reprorun")
    parser.add_argument("--suite", action="store_true", help="the whole comparison (default)")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    parser.add_argument("--skip-mlflow", action="store_true", help="suite: reprorun only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="suite: keep the work folder")
    parser.add_argument(
        "--mlflow-workers",
        type=int,
        help="suite: `mlflow server --workers N` (default: MLflow's own default, 4)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="suite: where the databases and artifacts go (default: the system's temp folder; "
        "e.g. /dev/shm to take the disk's fsync out of the comparison)",
    )
    parser.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--scale",
        action="store_true",
        help="the scale comparison instead: searches on 10k, 100k and 1M seeded runs, SQLite and "
        "PostgreSQL, MLflow at 10k (with --quick: 10k only)",
    )
    parser.add_argument("--scale-runs", default=",".join(str(n) for n in SCALE_SIZES))
    parser.add_argument("--scale-backends", default="sqlite,postgresql")
    parser.add_argument(
        "--postgres-url",
        help="scale: a PostgreSQL database to seed in (one schema per size; default: "
        "REPRORUN_TEST_POSTGRES_URL)",
    )
    parser.add_argument(
        "--scale-dir",
        type=Path,
        help="scale: keep the seeded stores here (and the PostgreSQL schemas) and reuse them",
    )
    parser.add_argument("--mlflow-python", help="scale: the python of a venv with mlflow")
    parser.add_argument("--scale-measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    budget = QUICK if args.quick else FULL

    if args.scale_measure:
        client: Client = (
            MlflowClientAdapter(args.tracking_uri)
            if args.client == "mlflow"
            else ReprorunClient(args.tracking_uri)
        )
        repeats = 3 if args.quick else SCALE_REPEATS
        measured = measure_scale(client, args.scale_measure, repeats)
        if args.json:
            args.json.write_text(json.dumps(measured, indent=1))
        return
    if args.scale:
        scale_results = run_scale(args)
        if args.json:
            args.json.write_text(json.dumps(scale_results, indent=1))
        passed = scale_table(scale_results)
        if not passed and not args.quick:
            sys.exit(1)
        return

    if args.tracking_uri and not args.suite:
        with tempfile.TemporaryDirectory(prefix="tracking-bench-") as tmp:
            if args.client == "mlflow":
                from mlflow import MlflowClient  # noqa: F401  (fail early, with its message)
            client_name = args.client
            if args.seed_only:
                client = (
                    MlflowClientAdapter(args.tracking_uri)
                    if client_name == "mlflow"
                    else ReprorunClient(args.tracking_uri)
                )
                seeded_experiment(client, budget.search_runs)
                return
            result = measure(args.tracking_uri, client_name, budget, Path(tmp))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        else:
            single_table(result, budget)
        return

    if not shutil.which("wrk"):
        print("note: wrk is not installed (apt-get install -y wrk): no runs/get req/s\n")
    compile_reprorun()
    results: dict[str, dict[str, Any]] = {}
    tmp = tempfile.mkdtemp(prefix="tracking-bench-", dir=args.work_dir)
    try:
        suite = Suite(Path(tmp), budget, args.quick, args.mlflow_workers)
        where = filesystem(Path(tmp))
        if not args.skip_mlflow:
            from env_build import install_mlflow

            say(f"MLflow {install_mlflow()} in {MLFLOW_VENV}")
        results.update(suite.reprorun())
        if not args.skip_mlflow:
            results.update(suite.mlflow())
    finally:
        if args.keep:
            print(f"\nwork folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    suite_table(results, budget)
    print(f"\ndatabases and artifacts on {where}")
    if not args.skip_mlflow:
        workers = args.mlflow_workers or "MLflow's default (4)"
        print(f"mlflow server workers: {workers}; reprorun server: its default (1 process)")


if __name__ == "__main__":
    main()
