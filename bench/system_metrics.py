"""Does sampling system metrics slow a run? `reprorun run` of a command that logs 10,000
metric points (single log_metric calls, each its own write to the run's SQLite store, which the
sampler writes to as well), with --no-system-metrics and with system metrics at the default
interval (10 s) and at 0.1 s; wall time of the whole run, median of N, the three in turn
(each first in its round), each run in a fresh store (a growing store would favour the first).

    python bench/system_metrics.py [--repeat 5] [--points 10000]

Target: no slower with system metrics on at their default interval (within the noise: the
medians differ by less than 5 %). The 0.1 s case (100 samples where MLflow's default takes
one) shows what a sample costs: ~3 ms of the supervising process's CPU (reading /proc) and a
write to the store the run's own metrics go to. The runs go to a throw-away store, with
--env-manager local.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOGGER = """
import sys, reprorun
with reprorun.start_run():
    for step in range(int(sys.argv[1])):
        reprorun.log_metric("loss", 1.0 / (step + 1), step=step)
"""
TARGET = 0.05  # relative difference of the medians


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--points", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        (project / "log.py").write_text(LOGGER)
        (project / "MLproject").write_text(
            f"name: logger\nentry_points:\n  main:\n    command: 'python log.py {args.points}'\n"
        )
        env = dict(os.environ)
        env.pop("REPRORUN_TRACKING_URI", None)
        run = [sys.executable, "-m", "reprorun", "run", str(project), "--env-manager", "local"]
        cases = {
            "system metrics off": ([*run, "--no-system-metrics"], {}),
            "on, every 10 s (default)": (run, {}),
            "on, every 0.1 s": (run, {"REPRORUN_SYSTEM_METRICS_INTERVAL": "0.1"}),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for i in range(args.repeat + 1):  # the first round warms the OS caches
            for name in names[i % 3 :] + names[: i % 3]:  # each case first in turn
                argv, extra = cases[name]
                home = {"REPRORUN_HOME": str(root / f"home-{i}-{names.index(name)}")}
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run(argv, env={**env, **extra, **home}, check=True, capture_output=True)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if i:
                    times[name].append(time.perf_counter() - start)
                    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                    cpu[name].append(used)
    base = statistics.median(times["system metrics off"])
    print(f"{args.points:,} metric points logged by the run; median of {args.repeat}\n")
    print(f"{'case':<26}  {'run wall time':>13}  {'vs off':>7}  {'CPU time (all processes)':>24}")
    print(f"{'-' * 26}  {'-' * 13}  {'-' * 7}  {'-' * 24}")
    for name, values in times.items():
        median = statistics.median(values)
        change = median / base - 1
        used = statistics.median(cpu[name]) * 1000
        print(f"{name:<26}  {median * 1000:>10.0f} ms  {change:>+7.1%}  {used:>21.0f} ms")
    default = statistics.median(times["on, every 10 s (default)"]) / base - 1
    verdict = "PASS" if default < TARGET else "FAIL"
    print(f"\ntarget: the default within {TARGET:.0%} of off; verdict: {verdict}")
    print("(wall times are only comparable on an otherwise idle machine: see uptime's load)")


if __name__ == "__main__":
    main()
