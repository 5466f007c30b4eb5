"""The model registry's REST calls: `reprorun server` against `mlflow server`, same session.

    python bench/registry.py [--models 200] [--versions 5] [--calls 300] [--workers 1]

Each server gets a fresh SQLite store and artifact folder on 127.0.0.1 and the same requests,
on one keep-alive connection (http.client), after the same seeding through the REST API:
  seed         --models registered models with a tag, --versions versions each (from a
               run's artifacts: source inside the run's folder, as MLflow's server demands)
               and an alias; the seeding's requests per second are shown
  get alias    GET registered-models/alias (what models:/NAME@ALIAS costs a client first)
  get version  GET model-versions/get
  download uri GET model-versions/get-download-uri
  search 100   GET registered-models/search?max_results=100 (each with its latest versions)
  versions     GET model-versions/search?filter=name='...' (one model's versions)
Median latency in ms over --calls requests (after 20 warm-up calls each); every answer must be
200 or the row fails. MLflow is the client virtualenv the compatibility tests build
(~/.cache/reprorun-tests/mlflow-3.17.2), `mlflow server --workers N` (default 1, as reprorun's
one process), telemetry off. The machine's other load makes the numbers noisy: compare the two
columns of one session, not sessions.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_overhead import reprorun_argv  # noqa: E402
from tracking import free_port, start_server, stop_server  # noqa: E402

MLFLOW_VENV = Path.home() / ".cache" / "reprorun-tests" / "mlflow-3.17.2"
API = "/api/2.0/mlflow"


class Conn:
    def __init__(self, port: int):
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.http.request(method, API + path, body=data, headers=headers)
        response = self.http.getresponse()
        raw = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {raw[:300]!r}")
        return json.loads(raw) if raw else {}


def seed(conn: Conn, models: int, versions: int) -> float:
    """Requests per second of the seeding (models, versions, tags, aliases)."""
    exp = conn.call("POST", "/experiments/create", {"name": "registry-bench"})["experiment_id"]
    run = conn.call("POST", "/runs/create", {"experiment_id": exp})["run"]["info"]
    source = run["artifact_uri"] + "/model"
    calls = 0
    start = time.perf_counter()
    for i in range(models):
        name = f"model-{i:04d}"
        conn.call(
            "POST",
            "/registered-models/create",
            {"name": name, "tags": [{"key": "team", "value": "a"}]},
        )
        for _ in range(versions):
            conn.call(
                "POST",
                "/model-versions/create",
                {"name": name, "source": source, "run_id": run["run_id"]},
            )
        conn.call(
            "POST", "/registered-models/alias", {"name": name, "alias": "champion", "version": "1"}
        )
        calls += versions + 2
    return calls / (time.perf_counter() - start)


def median_ms(conn: Conn, path: str, calls: int) -> float:
    for _ in range(20):
        conn.call("GET", path)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        conn.call("GET", path)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def measure(
    argv: list[str], env: dict[str, str], port: int, work: Path, args: Any
) -> dict[str, float]:
    proc, _, _ = start_server(argv, env, port, work / "server.log")
    try:
        conn = Conn(port)
        found = {"seed (req/s)": seed(conn, args.models, args.versions)}
        middle = f"model-{args.models // 2:04d}"
        for label, path in (
            ("get alias", f"/registered-models/alias?name={middle}&alias=champion"),
            ("get version", f"/model-versions/get?name={middle}&version=2"),
            ("download uri", f"/model-versions/get-download-uri?name={middle}&version=2"),
            ("search 100", "/registered-models/search?max_results=100"),
            ("versions", f"/model-versions/search?filter=name%3D%27{middle}%27"),
        ):
            found[label] = median_ms(conn, path, args.calls)
        return found
    finally:
        stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    base["MLFLOW_DISABLE_TELEMETRY"] = "true"
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        for tool in ("reprorun", "mlflow"):
            if tool == "mlflow" and args.skip_mlflow:
                continue
            work = Path(tmp) / tool
            work.mkdir()
            port = free_port()
            common = [
                "--port", str(port), "--host", "127.0.0.1",
                "--backend-store-uri", f"sqlite:///{work / 'store.db'}",
                "--artifacts-destination", str(work / "artifacts"),
            ]  # fmt: skip
            if tool == "reprorun":
                argv = [*reprorun_argv(), "server", *common, "--workers", str(args.workers)]
                env = {**base, "REPRORUN_HOME": str(work / "home")}
            else:
                mlflow = MLFLOW_VENV / "bin" / "mlflow"
                if not mlflow.exists():
                    sys.exit(f"No MLflow at {mlflow}: run the MLflow compatibility tests once.")
                argv = [str(mlflow), "server", *common, "--workers", str(args.workers)]
                env = dict(base)
            print(f"measuring {tool} ...", file=sys.stderr)
            results[tool] = measure(argv, env, port, work, args)
    rows = list(results["reprorun"])
    print(
        f"\nmodel registry, {args.models} models x {args.versions} versions, SQLite, "
        f"{args.workers} worker(s), median of {args.calls} calls\n"
    )
    print("| call | reprorun | mlflow | ratio |\n|---|---|---|---|")
    for row in rows:
        ours = results["reprorun"][row]
        theirs = results.get("mlflow", {}).get(row)
        unit = "" if "req/s" in row else " ms"
        ratio = (
            "-"
            if theirs is None
            else f"{(ours / theirs if 'req/s' in row else theirs / ours):.1f}x"
        )
        shown = "-" if theirs is None else f"{theirs:.1f}{unit}"
        print(f"| {row} | {ours:.1f}{unit} | {shown} | {ratio} |")
    print("\nratio: how many times faster reprorun is (req/s: ours/theirs; ms: theirs/ours)")


if __name__ == "__main__":
    main()
