"""What `reprorun run` adds to a run: its wall time minus the command's own, median of N.

    python bench/run_overhead.py [--repeat 10] [--importtime]

Baseline: the same command run directly with bash. Target: overhead under 0.3 s on a
2-core machine. The run goes to a throw-away store, with --env-manager local.
With --importtime, also prints the slowest imports of `reprorun run` (python -X importtime).
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
from pathlib import Path

TARGET_SECONDS = 0.3
COMMAND = "echo trivial"


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def reprorun_argv() -> list[str]:
    script = Path(sys.executable).parent / "reprorun"
    if script.exists():
        return [str(script)]
    found = shutil.which("reprorun")
    return [found] if found else [sys.executable, "-m", "reprorun"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()

    # A regular `pip install` leaves compiled bytecode; an editable install under
    # PYTHONDONTWRITEBYTECODE=1 (set on some machines) would recompile every module on every
    # start. Compile once, as an installed package would be.
    import compileall

    import yaml

    import reprorun

    for package in (reprorun, yaml):
        compileall.compile_dir(str(Path(package.__file__).parent), quiet=1)
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note: PYTHONDONTWRITEBYTECODE is set; the packages were compiled beforehand\n")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        (project / "MLproject").write_text(
            f"name: trivial\nentry_points:\n  main:\n    command: '{COMMAND}'\n"
        )
        env = {**os.environ, "REPRORUN_HOME": str(root / "home")}
        env.pop("REPRORUN_TRACKING_URI", None)
        run = [*reprorun_argv(), "run", str(project), "--env-manager", "local"]
        direct = ["bash", "-c", COMMAND]

        timed(run, env, project)  # warm-up: creates the store, fills the OS caches
        timed(direct, env, project)
        run_times, direct_times = [], []
        for _ in range(args.repeat):
            run_times.append(timed(run, env, project))
            direct_times.append(timed(direct, env, project))

        run_median = statistics.median(run_times)
        direct_median = statistics.median(direct_times)
        overhead = run_median - direct_median
        rows = [
            ("baseline: bash -c (direct)", f"{direct_median * 1000:8.1f} ms"),
            ("reprorun run --env-manager local", f"{run_median * 1000:8.1f} ms"),
            (f"overhead (median of {args.repeat})", f"{overhead * 1000:8.1f} ms"),
            ("target", f"{TARGET_SECONDS * 1000:8.1f} ms"),
            ("verdict", "PASS" if overhead < TARGET_SECONDS else "FAIL"),
        ]
        width = max(len(r[0]) for r in rows)
        print(f"{'measure'.ljust(width)}  value")
        print(f"{'-' * width}  -----------")
        for name, value in rows:
            print(f"{name.ljust(width)}  {value}")

        if args.importtime:
            python_run = [
                sys.executable,
                "-X",
                "importtime",
                "-m",
                "reprorun",
                "run",
                str(project),
                "--env-manager",
                "local",
            ]
            result = subprocess.run(
                python_run, env=env, cwd=project, capture_output=True, text=True, check=True
            )
            entries = []
            for line in result.stderr.splitlines():
                if line.startswith("import time:") and "|" in line:
                    parts = line.split("|")
                    try:
                        entries.append((int(parts[1]), parts[2].rstrip()))
                    except ValueError:
                        continue
            print("\nslowest imports of `reprorun run` (cumulative, microseconds):")
            for cumulative, name in sorted(entries, reverse=True)[:12]:
                print(f"  {cumulative:8d}  {name.strip()}")


if __name__ == "__main__":
    main()
