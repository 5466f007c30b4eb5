"""`reprorun server --workers N` against `mlflow server --workers N`: start-up, memory, req/s.

    python bench/server_workers.py [--workers 1,2,4] [--stores sqlite,postgresql]
                                   [--seconds 5] [--clients 8] [--skip-mlflow] [--quick]

For each store, tool and worker count, a fresh server on 127.0.0.1 (a new SQLite file, or a new
schema in the PostgreSQL database of --pg-url, default REPRORUN_TEST_POSTGRES_URL; dropped
after) is measured:
  start-up   launch to the first 200 on /health; "all up": until the process tree went idle
             (every worker has started), as bench/tracking.py's start_server
  memory     VmRSS of each worker process (the mean: the processes holding the listening
             socket, or uvicorn's spawned workers), and PSS summed over the whole process tree
             (for MLflow: its CLI process, job runner and huey consumers too; shared pages
             counted once), after the load. MB = 2**20 bytes.
  read       GET runs/get of a run with 20 params, 20 metrics and 20 tags: --clients client
             processes, one keep-alive connection each, for --seconds; requests per second
  write      the same clients, each on a run of its own, cycling log-metric (1 point),
             log-batch (20 points) and set-tag; requests per second. Every answer must be
             200: a failed request fails that row (the others are still measured).
  other load the cores that processes other than the server, its clients and PostgreSQL
             kept busy during the loads: above ~0.25 of a core the req/s are noisy.
MLflow is the real client virtualenv the compatibility tests build
(~/.cache/reprorun-tests/mlflow-3.17.2, see tests/integration/mlflow_env.py), its default
uvicorn server; on PostgreSQL it is given this interpreter's psycopg2 (same Python version)
through PYTHONPATH, since its virtualenv has no driver. Its telemetry is switched off.

The clients share the machine's cores with the servers (2 here): more workers than cores add
memory, not throughput; the table shows how each server divides what there is. --quick: one
and two workers, 2 s per load, SQLite only, reprorun only (a CI smoke run).

This file imports only the standard library at the top (and bench/tracking.py's helpers).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_overhead import reprorun_argv  # noqa: E402
from tracking import (  # noqa: E402
    CLOCK_TICKS,
    _kib,
    busy_cpu_seconds,
    compile_reprorun,
    free_port,
    own_cpu_seconds,
    process_tree,
    start_server,
    stop_server,
)

API = "/api/2.0/mlflow"
MLFLOW_VENV = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "reprorun-tests"
    / "mlflow-3.17.2"
)
DEFAULT_PG_URL = "postgresql://reprorun:reprorun@127.0.0.1:5432/reprorun_test"
SEED_ITEMS = 20  # params, metrics and tags of the run that the reads fetch
BATCH = 20  # metric points per log-batch request


@dataclass
class Target:
    tool: str  # reprorun or mlflow
    store: str  # sqlite or postgresql
    workers: int


# --- stores -----------------------------------------------------------------------------------


@contextlib.contextmanager
def store_uri(kind: str, work: Path, pg_url: str) -> Iterator[str]:
    """A fresh store: a new SQLite file, or a new schema (dropped afterwards)."""
    if kind == "sqlite":
        yield f"sqlite:///{work / f'store-{uuid.uuid4().hex[:8]}.db'}"
        return
    import psycopg2

    schema = "bench_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in pg_url else "?"
        yield f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def pg_shim(work: Path) -> Path:
    """A folder holding only this interpreter's psycopg2, for MLflow's PYTHONPATH."""
    import psycopg2

    shim = work / "pg-shim"
    shim.mkdir(exist_ok=True)
    site = Path(psycopg2.__file__).parent.parent
    for name in ("psycopg2", "psycopg2_binary.libs"):
        if (site / name).exists() and not (shim / name).exists():
            (shim / name).symlink_to(site / name)
    return shim


# --- HTTP -------------------------------------------------------------------------------------


def call(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> Any:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {response.status} {data[:300]!r}")
    return json.loads(data) if data else {}


def seed(port: int, clients: int) -> tuple[str, list[str]]:
    """The run the reads fetch, and one run per writing client."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        experiment = call(
            conn, "POST", f"{API}/experiments/create", {"name": f"bench-{uuid.uuid4().hex[:8]}"}
        )["experiment_id"]

        def new_run() -> str:
            body = {"experiment_id": experiment, "start_time": int(time.time() * 1000)}
            return str(call(conn, "POST", f"{API}/runs/create", body)["run"]["info"]["run_id"])

        read = new_run()
        now = int(time.time() * 1000)
        batch = {
            "run_id": read,
            "params": [{"key": f"p{i}", "value": str(i)} for i in range(SEED_ITEMS)],
            "metrics": [
                {"key": f"m{i}", "value": i / 3, "timestamp": now, "step": 0}
                for i in range(SEED_ITEMS)
            ],
            "tags": [{"key": f"t{i}", "value": f"v{i}"} for i in range(SEED_ITEMS)],
        }
        call(conn, "POST", f"{API}/runs/log-batch", batch)
        return read, [new_run() for _ in range(clients)]
    finally:
        conn.close()


def client(kind: str, port: int, run_id: str, deadline: float, out: Any) -> None:
    """One client process: requests on one keep-alive connection until ``deadline``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    done, step = 0, 0
    try:
        while time.time() < deadline:
            if kind == "read":
                call(conn, "GET", f"{API}/runs/get?run_id={run_id}")
            else:
                now = int(time.time() * 1000)
                which = done % 3
                if which == 0:
                    metric = {"key": "m", "value": step, "timestamp": now, "step": step}
                    call(conn, "POST", f"{API}/runs/log-metric", {"run_id": run_id, **metric})
                    step += 1
                elif which == 1:
                    metrics = [
                        {"key": "m", "value": s, "timestamp": now, "step": s}
                        for s in range(step, step + BATCH)
                    ]
                    call(
                        conn,
                        "POST",
                        f"{API}/runs/log-batch",
                        {"run_id": run_id, "metrics": metrics},
                    )
                    step += BATCH
                else:
                    tag = {"run_id": run_id, "key": "progress", "value": str(step)}
                    call(conn, "POST", f"{API}/runs/set-tag", tag)
            done += 1
        out.send((done, None))
    except Exception as exc:  # reported by the parent
        out.send((done, repr(exc)))
    finally:
        conn.close()


def load(kind: str, port: int, runs: list[str], seconds: float) -> float:
    """Requests per second of ``len(runs)`` client processes for ``seconds``."""
    context = multiprocessing.get_context("fork")
    start = time.time() + 0.3  # every client connected and waiting
    deadline = start + seconds
    pipes, procs = [], []
    for run_id in runs:
        parent, child = context.Pipe(duplex=False)
        proc = context.Process(target=client, args=(kind, port, run_id, deadline, child))
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    total, errors = 0, []
    for parent, proc in zip(pipes, procs, strict=True):
        if not parent.poll(seconds + 120):
            errors.append("a client did not report")
        else:
            done, error = parent.recv()
            total += done
            if error:
                errors.append(error)
        proc.join(timeout=10)
    if errors:
        raise RuntimeError(f"{kind} load failed: {errors[:3]}")
    return total / (time.time() - start if time.time() < deadline else seconds)


# --- processes --------------------------------------------------------------------------------


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def worker_processes(pid: int, port: int) -> list[int]:
    """The processes that serve requests: uvicorn's spawned workers, else those of the tree
    that hold the listening socket (forked workers, or the one server process; not MLflow's
    CLI, job runner or huey consumers)."""
    tree = process_tree(pid)
    spawned = [p for p in tree if b"spawn_main" in cmdline(p)]
    if spawned:
        return spawned
    sockets = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    holders = []
    for p in tree:
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in sockets for fd in Path(f"/proc/{p}/fd").iterdir()):
                holders.append(p)
    # Forked workers share the supervisor's socket: the supervisor (the tree's root) serves
    # nothing when it has serving children.
    serving = [p for p in holders if p != pid] or holders
    return serving or [pid]


def listening_inodes(port: int) -> list[str]:
    """The inodes of the TCP sockets listening on ``port``, from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.append(fields[9])
    return found


def database_cpu_seconds() -> float:
    """CPU time of the PostgreSQL server's processes (they work for the server measured)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / CLOCK_TICKS
    return total


def memory(pid: int, port: int) -> tuple[float, float]:
    """Mean VmRSS of a worker and PSS of the whole tree, in MB."""
    workers = worker_processes(pid, port)
    rss = statistics.mean(_kib(Path(f"/proc/{p}/status"), "VmRSS") for p in workers) / 1024
    pss = sum(_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in process_tree(pid)) / 1024
    return rss, pss


def argv(target: Target, port: int, uri: str, work: Path) -> list[str]:
    art = str(work / f"artifacts-{uuid.uuid4().hex[:8]}")
    if target.tool == "mlflow" and uri.startswith("postgresql://"):
        # SQLAlchemy 2.1 (MLflow's virtualenv) reads a bare postgresql:// as psycopg 3.
        uri = "postgresql+psycopg2://" + uri.removeprefix("postgresql://")
    common = ["--port", str(port), "--backend-store-uri", uri, "--artifacts-destination", art]
    if target.tool == "reprorun":
        return [*reprorun_argv(), "server", *common, "--workers", str(target.workers)]
    mlflow = str(MLFLOW_VENV / "bin" / "mlflow")
    return [mlflow, "server", "--host", "127.0.0.1", *common, "--workers", str(target.workers)]


def measure(
    target: Target, args: argparse.Namespace, work: Path, env: dict[str, str]
) -> dict[str, Any]:
    with store_uri(target.store, work, args.pg_url) as uri:
        port = free_port()
        log = work / f"{target.tool}-{target.store}-{target.workers}.log"
        proc, healthy, settled = start_server(argv(target, port, uri, work), env, port, log)
        try:
            pids = worker_processes(proc.pid, port)
            if len(pids) != target.workers:
                print(
                    f"  found {len(pids)} serving processes, not {target.workers}", file=sys.stderr
                )
            read_run, write_runs = seed(port, args.clients)
            busy = busy_cpu_seconds()
            own = own_cpu_seconds([proc.pid]) + database_cpu_seconds()
            started = time.perf_counter()
            reads = load("read", port, [read_run] * args.clients, args.seconds)
            writes = load("write", port, write_runs, args.seconds)
            elapsed = time.perf_counter() - started
            # Cores that other processes (not the server tree, not its clients) kept busy.
            ours = own_cpu_seconds([proc.pid]) + database_cpu_seconds() - own
            others = busy_cpu_seconds() - busy - ours
            rss, pss = memory(proc.pid, port)
            alive = all(Path(f"/proc/{p}").exists() for p in pids)
        finally:
            stop_server(proc)
    return {
        "start": healthy,
        "all_up": settled,
        "processes": len(pids),
        "rss": rss,
        "pss": pss,
        "read": reads,
        "write": writes,
        "same_workers": alive,
        "other_cores": max(others, 0.0) / elapsed,
    }


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--pg-url", default=os.environ.get("REPRORUN_TEST_POSTGRES_URL") or DEFAULT_PG_URL
    )
    parser.add_argument("--json", metavar="FILE", help="Also write the results here.")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.stores, args.seconds, args.skip_mlflow = "1,2", "sqlite", 2.0, True
    counts = [int(n) for n in args.workers.split(",")]
    stores = args.stores.split(",")
    tools = ["reprorun"] + ([] if args.skip_mlflow else ["mlflow"])
    if "mlflow" in tools and not (MLFLOW_VENV / "bin" / "mlflow").exists():
        sys.exit(
            f"No MLflow at {MLFLOW_VENV}: run the MLflow compatibility tests once "
            "(python -m pytest tests/integration/test_mlflow_compat.py), or pass --skip-mlflow."
        )
    compile_reprorun()
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    base.update(REPRORUN_HOME=str(work / "home"), MLFLOW_DISABLE_TELEMETRY="true")
    results: list[tuple[Target, dict[str, Any]]] = []
    try:
        for store in stores:
            for tool in tools:
                env = dict(base)
                if tool == "mlflow" and store == "postgresql":
                    env["PYTHONPATH"] = str(pg_shim(work))
                for n in counts:
                    target = Target(tool, store, n)
                    print(f"measuring {tool} on {store} with {n} worker(s)...", file=sys.stderr)
                    try:
                        results.append((target, measure(target, args, work, env)))
                    except (Exception, SystemExit) as exc:  # the others are still measured
                        print(f"  {tool} on {store} x{n} failed: {exc}", file=sys.stderr)
                        results.append((target, {"failed": str(exc).splitlines()[0][:60]}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    show(results, args)
    if args.json:
        rows = [{**vars(t), **r} for t, r in results]
        Path(args.json).write_text(json.dumps(rows, indent=2))


def show(results: list[tuple[Target, dict[str, Any]]], args: argparse.Namespace) -> None:
    head = [
        "server", "store", "workers", "start-up", "all up", "RSS/worker", "PSS total",
        "read req/s", "write req/s", "other load",
    ]  # fmt: skip
    rows = [head]
    for t, r in results:
        if "failed" in r:
            rows.append([t.tool, t.store, str(t.workers), "failed: " + r["failed"]] + [""] * 6)
            continue
        rows.append(
            [
                t.tool,
                t.store,
                str(t.workers),
                f"{r['start']:.2f} s",
                f"{r['all_up']:.2f} s",
                f"{r['rss']:.0f} MB",
                f"{r['pss']:.0f} MB",
                f"{r['read']:,.0f}",
                f"{r['write']:,.0f}",
                f"{r['other_cores']:.2f} cores",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    print(
        f"\n{args.clients} client processes, {args.seconds:g} s per load, "
        f"{os.cpu_count()} cores; write = log-metric / log-batch ({BATCH}) / set-tag; "
        "other load: cores used meanwhile by processes other than the server, its clients and "
        "PostgreSQL (above ~0.25 the numbers are noisy)"
    )
    for i, row in enumerate(rows):
        print(
            "  ".join(
                c.rjust(w) if j > 2 else c.ljust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
