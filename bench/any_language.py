"""Logging from programs outside Python: how many values per second reach the run.

    python bench/any_language.py [--quick] [--skip-mlflow] [--skip-r]

Measured, each into a fresh store (a throw-away REPRORUN_HOME), median of 3:
  cli single      `reprorun log metric KEY VALUE --step I`, one process per value (the
                  console script, as a shell loop calls it)
  cli param       `reprorun param NAME --default V` inside a run (reads the run, logs the value)
  cli pipe        `reprorun log metric -` reading 100,000 `KEY VALUE STEP` lines from a pipe,
                  process start included
  R client        rr_log_metric() called 1,000 times by an R script under `reprorun run`
                  (REST to the run's own endpoint, as in examples/iris-r)
Baseline: what a shell or R user of MLflow has without its R package (which cannot be
installed here): one `python -c "import mlflow; mlflow.log_metric(...)"` per value, MLflow
from /tmp/bench-mlflow-venv (made when missing, as bench/env_build.py does) on a SQLite file.
Target: the pipe at least 10,000 values/s; a single call under 0.5 s; every way at least 5x
the baseline. --quick (CI smoke): fewer calls, one repeat, no MLflow.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from env_build import MLFLOW_VENV, install_mlflow
from run_overhead import reprorun_argv

PIPE_TARGET = 10_000.0  # values/s
SINGLE_TARGET = 0.5  # seconds per call
RATIO_TARGET = 5.0

R_SCRIPT = """
source(system("reprorun r-client", intern = TRUE))
rr_start_run()
n <- as.integer(rr_param("n", 1000L))
start <- Sys.time()
for (i in seq_len(n)) rr_log_metric("loss", 1 / i, step = i)
elapsed <- as.numeric(difftime(Sys.time(), start, units = "secs"))
cat(sprintf("RATE %f\\n", n / elapsed))
"""


def median_of(repeat: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeat))


class Bench:
    def __init__(self, work: Path, quick: bool):
        self.work = work
        self.quick = quick
        self.reprorun = reprorun_argv()

    def fresh_env(self) -> dict[str, str]:
        home = Path(tempfile.mkdtemp(dir=self.work, prefix="home-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
        env["REPRORUN_HOME"] = str(home)
        return env

    def new_run(self, env: dict[str, str]) -> dict[str, str]:
        out = subprocess.run(
            [*self.reprorun, "runs", "create"], env=env, capture_output=True, text=True, check=True
        )
        return dict(env, REPRORUN_RUN_ID=out.stdout.strip())

    def single_calls(self) -> float:
        """Values per second, one `reprorun log metric` process per value."""
        env = self.new_run(self.fresh_env())
        calls = 5 if self.quick else 30
        start = time.perf_counter()
        for i in range(calls):
            subprocess.run(
                [*self.reprorun, "log", "metric", "loss", str(1 / (i + 1)), "--step", str(i)],
                env=env,
                check=True,
            )
        return calls / (time.perf_counter() - start)

    def param_call(self) -> float:
        """Seconds for one `reprorun param` inside a run."""
        env = self.new_run(self.fresh_env())
        start = time.perf_counter()
        subprocess.run(
            [*self.reprorun, "param", "lr", "--default", "0.1", "--type", "float"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - start

    def pipe(self) -> float:
        """Values per second through one `reprorun log metric -`."""
        env = self.new_run(self.fresh_env())
        count = 10_000 if self.quick else 100_000
        lines = "".join(f"loss {1 / (i + 1)!r} {i}\n" for i in range(count)).encode()
        start = time.perf_counter()
        subprocess.run(
            [*self.reprorun, "log", "metric", "-"],
            input=lines,
            env=env,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        return count / (time.perf_counter() - start)

    def r_client(self) -> float:
        """rr_log_metric calls per second inside `reprorun run`."""
        project = self.work / "r-project"
        project.mkdir(exist_ok=True)
        n = 100 if self.quick else 1000
        (project / "MLproject").write_text(
            "name: r-bench\nentry_points:\n  main:\n"
            f"    parameters:\n      n: {{type: int, default: {n}}}\n"
            '    command: "Rscript bench.R -P n={n}"\n'
        )
        (project / "bench.R").write_text(R_SCRIPT)
        out = subprocess.run(
            [*self.reprorun, "run", str(project)],
            env=self.fresh_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        rate = [line for line in out.stdout.splitlines() if line.startswith("RATE ")]
        return float(rate[-1].split()[1])

    def mlflow_single(self) -> float:
        """Values per second with one `python -c "import mlflow; ..."` per value."""
        python = str(MLFLOW_VENV / "bin" / "python")
        db = Path(tempfile.mkdtemp(dir=self.work, prefix="mlflow-")) / "mlflow.db"
        env = self.fresh_env()
        env.update(MLFLOW_TRACKING_URI=f"sqlite:///{db}", MLFLOW_DISABLE_TELEMETRY="true")
        created = subprocess.run(
            [
                python,
                "-c",
                "import mlflow; print(mlflow.MlflowClient().create_run('0').info.run_id)",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        env["MLFLOW_RUN_ID"] = created.stdout.strip().splitlines()[-1]
        calls = 5
        start = time.perf_counter()
        for i in range(calls):
            code = f"import mlflow; mlflow.log_metric('loss', {1 / (i + 1)!r}, step={i})"
            subprocess.run([python, "-c", code], env=env, check=True, capture_output=True)
        return calls / (time.perf_counter() - start)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke: small, one repeat")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--skip-r", action="store_true")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    work = Path(tempfile.mkdtemp(prefix="reprorun-bench-any-"))
    try:
        bench = Bench(work, args.quick)
        single = median_of(repeat, bench.single_calls)
        param = median_of(repeat, bench.param_call)
        pipe = median_of(repeat, bench.pipe)
        r_rate = None
        if not args.skip_r and shutil.which("Rscript"):
            r_rate = median_of(repeat, bench.r_client)
        baseline = None
        if not (args.quick or args.skip_mlflow):
            print(f"MLflow {install_mlflow()} from {MLFLOW_VENV}", flush=True)
            baseline = median_of(repeat, bench.mlflow_single)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ratio(rate: float) -> str:
        return f"{rate / baseline:,.1f}x" if baseline else "-"

    def beats(rate: float) -> bool:
        return baseline is None or rate / baseline >= RATIO_TARGET

    rows = [
        (
            "cli single (values/s)",
            f"{single:,.1f}",
            ratio(single),
            f"< {SINGLE_TARGET} s/call, >= {RATIO_TARGET:.0f}x",
            verdict(1 / single < SINGLE_TARGET and beats(single)),
        ),
        (
            "cli param (s/call)",
            f"{param:.3f}",
            "-",
            f"< {SINGLE_TARGET} s",
            verdict(param < SINGLE_TARGET),
        ),
        (
            "cli pipe (values/s)",
            f"{pipe:,.0f}",
            ratio(pipe),
            f">= {PIPE_TARGET:,.0f}/s",
            verdict(pipe >= PIPE_TARGET and beats(pipe)),
        ),
    ]
    if r_rate is not None:
        rows.append(
            (
                "R rr_log_metric (calls/s)",
                f"{r_rate:,.0f}",
                ratio(r_rate),
                f">= {RATIO_TARGET:.0f}x",
                verdict(beats(r_rate)),
            )
        )
    if baseline is not None:
        rows.append(
            ("MLflow python -c per value (values/s)", f"{baseline:,.2f}", "1.0x", "baseline", "")
        )
    headers = ("measure", "value", "vs MLflow", "target", "verdict")
    widths = [max(len(str(r[i])) for r in (*rows, headers)) for i in range(len(headers))]
    for row in (headers, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
