"""`reprorun models serve` against `mlflow models serve` of the same small sklearn model.

    python bench/serving.py [--seconds 5] [--clients 4] [--rows 1,100] [--skip-mlflow] [--quick]

The model: a logistic regression on iris (4 columns, a column signature), saved by the real
MLflow client (~/.cache/reprorun-tests/mlflow-3.17.2, see tests/integration/mlflow_env.py) in
its cloudpickle format, so that every server here can load it. Servers, each on a free port of
127.0.0.1, under a fresh REPRORUN_HOME:
  mlflow local      `mlflow models serve --env-manager local` in MLflow's virtualenv (uvicorn,
                    FastAPI, MLflow's parser and schema enforcement)
  reprorun uv       `reprorun models serve` (the default: uv), in the model's own environment
                    built from its python_env.yaml (mlflow inside: MLflow's parser and schema
                    enforcement behind reprorun's stdlib HTTP server); started twice: the first
                    start builds the environment, the second reuses it from the cache
  reprorun local    `reprorun models serve --env-manager local`: reprorun's own parser, the
                    model unpickled in reprorun's interpreter (numpy, no pandas)
Measured:
  start             launch to the first 200 answer of POST /invocations ("cold start to first
                    answer"; for reprorun uv, the first start includes building the environment)
  req/s, p50, p99   --clients client processes, one keep-alive connection each, POST
                    /invocations of a dataframe_split of --rows rows for --seconds; every
                    answer must be 200 with as many predictions as rows
  other load        cores kept busy by other processes during the load (noise above ~0.25)
--quick: reprorun local only, a model saved by reprorun itself, 1 row, 2 s (a CI smoke run).

Only the standard library is imported at the top; the servers run in their own processes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MLFLOW_VENV = Path.home() / ".cache" / "reprorun-tests" / "mlflow-3.17.2"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
COLUMNS = ["sl", "sw", "pl", "pw"]
ROW = [5.9, 3.0, 4.2, 1.5]

SAVE_MLFLOW = """
import sys
import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
x, y = load_iris(return_X_y=True, as_frame=True)
x.columns = %r
model = LogisticRegression(max_iter=300).fit(x, y)
mlflow.sklearn.save_model(model, sys.argv[1], serialization_format="cloudpickle",
                          signature=infer_signature(x, model.predict(x)))
""" % (COLUMNS,)  # noqa: UP031

SAVE_REPRORUN = """
import sys
from pathlib import Path
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from reprorun.tracking.models import save_model
x, y = load_iris(return_X_y=True)
save_model(LogisticRegression(max_iter=300).fit(x, y), Path(sys.argv[1]))
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def busy_cpu_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants (children read from /proc)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / CLOCK_TICKS
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return total


def clean_env(home: Path, path_first: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    env.update(REPRORUN_HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    return env


def payload(rows: int) -> bytes:
    return json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [ROW] * rows}}).encode()


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    start_seconds: float | None = None
    results: dict[int, dict[str, float]] = field(default_factory=dict)

    def start(self, timeout: float = 900) -> float:
        """Launch; seconds to the first 200 answer of /invocations."""
        began = time.monotonic()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        body = payload(1)
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n"
                    + self.log.read_text(errors="replace")[-3000:]
                )
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{self.port}/invocations",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - began
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} gave no answer in {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _client(port: int, body: bytes, rows: int, seconds: float, queue: Any) -> None:
    latencies: list[float] = []
    errors = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(latencies) < 200_000:
        began = time.perf_counter()
        try:
            conn.request("POST", "/invocations", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            ok = response.status == 200 and len(json.loads(data)["predictions"]) == rows
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies.append(time.perf_counter() - began)
        errors += not ok
    conn.close()
    times = os.times()
    queue.put((latencies, errors, times.user + times.system))


def load(server: Server, rows: int, clients: int, seconds: float) -> dict[str, float]:
    body = payload(rows)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=_client, args=(server.port, body, rows, seconds, queue))
        for _ in range(clients)
    ]
    busy_before = busy_cpu_seconds()
    assert server.process is not None
    server_before = tree_cpu_seconds(server.process.pid)
    began = time.monotonic()
    for worker in workers:
        worker.start()
    gathered = [queue.get(timeout=seconds + 120) for _ in workers]
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began
    server_cpu = tree_cpu_seconds(server.process.pid) - server_before
    latencies = sorted(x for lat, _, _ in gathered for x in lat)
    errors = sum(e for _, e, _ in gathered)
    if errors:
        raise RuntimeError(f"{server.name}: {errors} of {len(latencies)} requests failed")
    clients_cpu = sum(c for _, _, c in gathered)  # not "other load"
    other = max(0.0, busy_cpu_seconds() - busy_before - server_cpu - clients_cpu)
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "server_cores": server_cpu / elapsed,
        "other": other / elapsed,
    }


def save_model(python: str, script: str, target: Path) -> None:
    done = subprocess.run(
        [python, "-c", script, str(target)],
        env=clean_env(target.parent),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"saving the model failed:\n{done.stderr[-3000:]}")


def reprorun_argv() -> list[str]:
    script = Path(sys.executable).parent / "reprorun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "reprorun"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rows", default="1,100", help="rows per request, comma-separated")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    if args.quick:
        args.skip_mlflow, args.seconds, rows = True, 2.0, [1]
    mlflow_python = MLFLOW_VENV / "bin" / "python"
    if not args.quick and not mlflow_python.exists():
        print(f"MLflow's virtualenv is missing ({MLFLOW_VENV}): run the serving tests once "
              "(they build it), or use --quick.", file=sys.stderr)  # fmt: skip
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    home = work / "home"
    home.mkdir()
    model = work / "model"
    servers: list[Server] = []
    try:
        if args.quick:
            save_model(sys.executable, SAVE_REPRORUN, model)
        else:
            save_model(str(mlflow_python), SAVE_MLFLOW, model)

        def reprorun_server(name: str, manager: str) -> Server:
            port = free_port()
            argv = [*reprorun_argv(), "models", "serve", "-m", str(model), "--port", str(port)]
            argv += ["--env-manager", manager]
            return Server(name, argv, clean_env(home), work / f"{manager}.log", port)

        plan: list[tuple[Server, str]] = []
        if not args.skip_mlflow:
            port = free_port()
            argv = [str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve", "-m", str(model)]
            argv += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
            mlflow = Server(
                "mlflow local", argv, clean_env(home, MLFLOW_VENV / "bin"), work / "mlflow.log",
                port,
            )  # fmt: skip
            plan.append((mlflow, "start"))
        if not args.quick:
            first = reprorun_server("reprorun uv", "uv")
            plan.append((first, "first start (builds the environment)"))
        plan.append((reprorun_server("reprorun local", "local"), "start"))
        table: list[list[str]] = []
        for server, what in plan:
            if server.name == "reprorun uv":
                seconds = server.start()
                print(f"{server.name}: {what}: {seconds:.1f} s", file=sys.stderr, flush=True)
                table.append([server.name, f"{what}", f"{seconds:.2f} s", "", "", "", "", ""])
                server.stop()
                what = "second start (environment cached)"
            seconds = server.start()
            print(f"{server.name}: {what}: {seconds:.1f} s", file=sys.stderr, flush=True)
            servers.append(server)
            table.append([server.name, what, f"{seconds:.2f} s", "", "", "", "", ""])
            for count in rows:
                result = load(server, count, args.clients, args.seconds)
                table.append(
                    [
                        server.name,
                        f"{count} row{'s' if count > 1 else ''}/request",
                        "",
                        f"{result['rps']:.0f}",
                        f"{result['p50']:.1f}",
                        f"{result['p99']:.1f}",
                        f"{result['server_cores']:.2f}",
                        f"{result['other']:.2f}",
                    ]
                )
            server.stop()
        headers = ["server", "measure", "start", "req/s", "p50 ms", "p99 ms", "srv cores", "other"]
        widths = [max(len(r[i]) for r in [headers, *table]) for i in range(len(headers))]
        print(
            f"\n{args.clients} clients x {args.seconds:g} s per load, keep-alive; "
            f"{os.cpu_count()} cores; model: iris logistic regression"
        )
        for line in [headers, ["-" * w for w in widths], *table]:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        return 0
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
