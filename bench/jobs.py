"""Jobs: how fast a trivial run starts and ends on each backend, and the local queue's throughput.

    python bench/jobs.py [--quick] [--skip-mlflow] [--ray ADDRESS] [--slurm] [--repeat N]

Measured, each backend in a fresh store (a throw-away REPRORUN_HOME), median of --repeat:
  submit->start   from invoking `reprorun run ... --detach` until the job's command writes its
                  first timestamp (the clock is the machine's; every job runs on this machine)
  submit->finish  until the run is FINISHED as the backend reports it, polled every 20 ms
                  through the backend's handle (what `reprorun runs status` does)
for: local --detach (a supervisor process), --backend ray (Ray Jobs API; --ray or
REPRORUN_TEST_RAY_ADDRESS), --backend slurm (sbatch; --slurm or REPRORUN_TEST_SLURM=1).
  queue           50 trivial runs submitted (4 submitters) with --detach --max-parallel 2,
                  their commands held at a gate until all are in: the seconds to submit
                  them, then from opening the gate until all have FINISHED (the queue's
                  throughput, runs/s), and the most commands ever running together (<= 2)
Baseline: `mlflow run --env-manager local` of the same project (synchronous: start is the
command's first timestamp, finish is the process's exit), MLflow from /tmp/bench-mlflow-venv
(made when missing, as bench/env_build.py does), and 50 such runs one after another (MLflow
has no queue). Target: local --detach submit->start under 1 s and at most MLflow's;
the queue at least as many runs/s as MLflow's back-to-back runs.
--quick (CI smoke): 1 repeat, 8 queued runs, no MLflow unless asked.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from env_build import MLFLOW_VENV, install_mlflow
from run_overhead import reprorun_argv

START_TARGET = 1.0  # seconds, local --detach submit->start
MLPROJECT = """name: trivial
entry_points:
  main:
    parameters:
      i: {type: int, default: 0}
      gate: {type: string, default: ""}
    command: 'bash job.sh {i} {gate}'
"""
JOB = """date +%s.%N > {stamps}/start-$1
while [ -n "$2" ] && [ ! -e "$2" ]; do sleep 0.01; done
echo "start $1 $(date +%s.%N)" >> {stamps}/spans
echo hi
echo "end $1 $(date +%s.%N)" >> {stamps}/spans
"""


class Bench:
    def __init__(self, work: Path, repeat: int):
        self.work = work
        self.repeat = repeat
        self.reprorun = reprorun_argv()
        self.stamps = work / "stamps"
        self.stamps.mkdir()
        self.project = work / "project"
        self.project.mkdir()
        (self.project / "MLproject").write_text(MLPROJECT)
        (self.project / "job.sh").write_text(JOB.replace("{stamps}", str(self.stamps)))

    def fresh_env(self) -> dict[str, str]:
        home = Path(tempfile.mkdtemp(dir=self.work, prefix="home-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
        env["REPRORUN_HOME"] = str(home)
        return env

    def submit(self, env: dict[str, str], i: int, *options: str) -> str:
        done = subprocess.run(
            [*self.reprorun, "run", str(self.project), "-P", f"i={i}", "--detach", *options],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"submit failed: {done.stderr.strip()[-2000:]}")
        return done.stdout.strip()

    def started_at(self, i: int, timeout: float = 300) -> float:
        stamp = self.stamps / f"start-{i}"
        deadline = time.time() + timeout
        while not (stamp.is_file() and stamp.read_text().strip()):
            if time.time() > deadline:
                raise SystemExit(f"job {i} did not start within {timeout} s")
            time.sleep(0.005)
        return float(stamp.read_text())

    def finished_at(self, env: dict[str, str], *run_ids: str, timeout: float = 300) -> float:
        """When the backend's handles first report all ``run_ids`` ended (one process
        polling every 20 ms)."""
        code = (
            "import sys, time\n"
            "from reprorun.backends.status import attach\n"
            "from reprorun.tracking.store import open_store\n"
            "store = open_store()\n"
            "handles = [attach(store, store.get_run(r)) for r in sys.argv[1:]]\n"
            f"deadline = time.time() + {timeout}\n"
            "while handles and time.time() < deadline:\n"
            "    for h in list(handles):\n"
            "        if (s := h.get_status()).is_terminal:\n"
            "            handles.remove(h)\n"
            "            if s.value != 'FINISHED':\n"
            "                sys.exit(f'run {h.run_id} ended {s.value}')\n"
            "    time.sleep(0.02)\n"
            "print(time.time(), len(handles))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, *run_ids], env=env, capture_output=True, text=True
        )
        if out.returncode != 0 or not out.stdout.strip():
            raise SystemExit(f"runs did not finish: {out.stderr[-2000:]}")
        stamp, left = out.stdout.split()
        if left != "0":
            raise SystemExit(f"{left} runs did not end within {timeout} s")
        return float(stamp)

    def latency(self, label: str, *options: str) -> tuple[float, float]:
        """Median submit->start and submit->finish of ``repeat`` trivial jobs."""
        starts, finishes = [], []
        for n in range(self.repeat):
            env = self.fresh_env()
            i = 1000 + len(list(self.stamps.glob("start-*"))) + n
            submitted = time.time()
            run_id = self.submit(env, i, *options)
            starts.append(self.started_at(i) - submitted)
            finishes.append(self.finished_at(env, run_id) - submitted)
        print(f"  {label}: start {starts}, finish {finishes}", flush=True)
        return statistics.median(starts), statistics.median(finishes)

    def queue(self, count: int) -> tuple[float, float, float, int]:
        """``count`` runs submitted with --max-parallel 2 whose commands wait for a gate
        file: seconds to submit them all, then from opening the gate until all FINISHED (the
        queue's own throughput, runs/s), and the peak number of commands running together."""
        env = self.fresh_env()
        spans = self.stamps / "spans"
        spans.unlink(missing_ok=True)
        gate = self.work / "gate"
        start = time.time()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            run_ids = list(
                pool.map(
                    lambda i: self.submit(env, i, "-P", f"gate={gate}", "--max-parallel", "2"),
                    range(count),
                )
            )
        submitted = time.time() - start
        opened = time.time()
        gate.touch()
        drained = self.finished_at(env, *run_ids) - opened
        return submitted, drained, count / drained, peak(spans)

    def mlflow(self, count: int) -> tuple[float, float, float]:
        """MLflow: median start and finish of a synchronous `mlflow run`, and the seconds
        for ``count`` back-to-back runs."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
        env["PATH"] = f"{MLFLOW_VENV / 'bin'}{os.pathsep}{env['PATH']}"
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{self.work / 'mlflow.db'}"
        argv = [str(MLFLOW_VENV / "bin" / "mlflow"), "run", str(self.project)]
        argv += ["--env-manager", "local"]
        starts, finishes = [], []
        begin = time.time()
        for i in range(count):
            submitted = time.time()
            done = subprocess.run([*argv, "-P", f"i={5000 + i}"], env=env, capture_output=True)
            if done.returncode != 0:
                raise SystemExit(f"mlflow run failed: {done.stderr.decode()[-2000:]}")
            finishes.append(time.time() - submitted)
            starts.append(self.started_at(5000 + i) - submitted)
        total = time.time() - begin
        return statistics.median(starts[: self.repeat]), statistics.median(finishes), total


def peak(spans: Path) -> int:
    events = []
    for line in spans.read_text().splitlines():
        kind, _, stamp = line.split()
        events.append((float(stamp), 1 if kind == "start" else -1))
    running = top = 0
    for _, step in sorted(events):
        running += step
        top = max(top, running)
    return top


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--queued", type=int, default=50)
    parser.add_argument("--ray", default=os.environ.get("REPRORUN_TEST_RAY_ADDRESS"))
    parser.add_argument(
        "--slurm", action="store_true", default=bool(os.environ.get("REPRORUN_TEST_SLURM"))
    )
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    queued = 8 if args.quick else args.queued
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    rows: list[list[str]] = []
    try:
        bench = Bench(work, repeat)
        print(f"repeat {repeat}, queue of {queued}; work in {work}", flush=True)
        local = bench.latency("local --detach")
        rows.append(["local --detach", f"{local[0]:.3f}", f"{local[1]:.3f}"])
        if args.ray:
            config = work / "ray.json"
            config.write_text(json.dumps({"address": args.ray}))
            ray = bench.latency("ray", "--backend", "ray", "--backend-config", str(config))
            rows.append(["ray", f"{ray[0]:.3f}", f"{ray[1]:.3f}"])
        if args.slurm:
            slurm = bench.latency("slurm", "--backend", "slurm")
            rows.append(["slurm", f"{slurm[0]:.3f}", f"{slurm[1]:.3f}"])
        mlflow = None
        if not args.skip_mlflow and not args.quick:
            print(f"MLflow {install_mlflow()} in {MLFLOW_VENV}", flush=True)
            mlflow = bench.mlflow(queued)
            rows.append(["mlflow run --env-manager local", f"{mlflow[0]:.3f}", f"{mlflow[1]:.3f}"])
        submitted, elapsed, rate, top = bench.queue(queued)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\nsubmit-to-start and submit-to-finish of a trivial job (median, seconds)")
    width = max(len(r[0]) for r in rows)
    print(f"{'backend':<{width}}  {'start':>7}  {'finish':>7}")
    for name, start, finish in rows:
        print(f"{name:<{width}}  {start:>7}  {finish:>7}")
    print(
        f"\nqueue: {queued} runs, --max-parallel 2: submitted in {submitted:.1f} s; once "
        f"released, all FINISHED in {elapsed:.1f} s = {rate:.2f} runs/s, at most {top} "
        "running together"
    )
    verdicts = [f"local --detach start {local[0]:.3f} s (target < {START_TARGET} s)"]
    ok = local[0] < START_TARGET and top <= 2
    if mlflow is not None:
        mlflow_rate = queued / mlflow[2]
        overall = queued / (submitted + elapsed)  # submitting included, as MLflow's is
        verdicts.append(
            f"MLflow start {mlflow[0]:.3f} s; {queued} back-to-back mlflow runs "
            f"{mlflow[2]:.1f} s = {mlflow_rate:.2f} runs/s vs the queue's {overall:.2f} runs/s "
            "submitting included"
        )
        ok = ok and local[0] <= mlflow[0] and overall >= mlflow_rate
    for line in verdicts:
        print(line)
    print("targets met" if ok else "TARGET MISSED")


if __name__ == "__main__":
    main()
