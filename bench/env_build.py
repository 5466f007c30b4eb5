"""Environment build and warm-start times: reprorun's uv manager against MLflow Projects.

    python bench/env_build.py [--repeat N] [--skip-mlflow]

The project declares python "3.11", scikit-learn and pandas (python_env.yaml); its command is a
Python script that writes time.time() to $BENCH_STAMP. Measured for each tool:

  cold build   `reprorun run PROJECT --env-manager uv` with a fresh REPRORUN_HOME (store and
               environment cache) each time, median of N (default 3). The package cache is the
               bench's own: empty for one extra first build, reported alone as "empty package
               cache", then warm.
  warm start   from launching `reprorun run` to the command's first line, environment cached,
               median of N (default 10) after one warm-up; includes the command's own Python start.

Baseline: `mlflow run PROJECT --env-manager virtualenv` (and `uv`, when the installed MLflow has
it), MLflow installed in its own virtualenv (/tmp/bench-mlflow-venv, made when missing), fresh
MLFLOW_ENV_ROOT per build, a SQLite tracking store created before timing. Where MLflow fails,
the table says so and the error is printed. Its virtualenv manager runs `pyenv install
--skip-existing 3.11.<newest>`, which downloads CPython from python.org; when that fails, the
bench measures it again with the project pinned to the newest 3.11 that pyenv already has.
Targets: warm start under 0.3 s; cold build at least 5x faster than MLflow's virtualenv manager.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run_overhead import reprorun_argv  # the same `reprorun` every bench times

PYTHON = "3.11"
MLFLOW_VENV = Path("/tmp/bench-mlflow-venv")
WARM_TARGET = 0.3
RATIO_TARGET = 5.0
HEADER = ["measure", "reprorun uv", "MLflow virtualenv", "ratio", "MLflow uv", "ratio", "target"]
HAS_UV = "from mlflow.utils import env_manager as m; print(getattr(m, 'UV', ''))"
STAMP = 'import os, time\nopen(os.environ["BENCH_STAMP"], "w").write(repr(time.time()))\n'


class BenchError(Exception):
    """A tool failed; the message is its command and the end of its output."""


def write_project(folder: Path, python: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "MLproject").write_text(
        "name: env-bench\npython_env: python_env.yaml\n"
        "entry_points:\n  main:\n    command: python stamp.py\n"
    )
    (folder / "python_env.yaml").write_text(
        f'python: "{python}"\nbuild_dependencies:\n  - pip\n'
        "dependencies:\n  - scikit-learn\n  - pandas\n"
    )
    (folder / "stamp.py").write_text(STAMP)
    return folder


def summarise(output: str) -> str:
    """The end of a failure's output without traceback frames."""
    lines = [x for x in output.splitlines() if x.strip() and not x.startswith((" ", "Traceback"))]
    return "\n".join("    " + line for line in lines[-8:])


def run_timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        output = done.stdout + "\n" + done.stderr
        raise BenchError(f"`{shlex.join(argv)}` exited {done.returncode}:\n{summarise(output)}")
    return elapsed


def measure(
    label: str, argv: list[str], env: dict[str, str], work: Path, cold_n: int, warm_n: int
) -> dict[str, float]:
    """Cold builds (the first with an empty package cache), then warm starts."""
    work.mkdir(parents=True)
    home = work / "home"
    cache = work / "package-cache"
    env = {
        **env,
        "REPRORUN_HOME": str(home),  # each tool reads its own variable
        "MLFLOW_ENV_ROOT": str(home),
        "UV_CACHE_DIR": str(cache / "uv"),
        "PIP_CACHE_DIR": str(cache / "pip"),
        "BENCH_STAMP": str(work / "stamp"),
    }
    builds = []
    for i in range(cold_n + 1):
        shutil.rmtree(home, ignore_errors=True)
        builds.append(run_timed(argv, env, work))
        print(f"  {label}: build {i} ({'empty' if i == 0 else 'warm'} cache) {builds[-1]:.1f} s")
    starts = []
    for i in range(warm_n + 1):  # the first is a warm-up
        launched = time.time()
        run_timed(argv, env, work)
        if i:
            starts.append(float((work / "stamp").read_text()) - launched)
    print(f"  {label}: warm start {statistics.median(starts) * 1000:.0f} ms")
    shutil.rmtree(work, ignore_errors=True)  # environments are large
    cold, warm = statistics.median(builds[1:]), statistics.median(starts)
    return {"empty": builds[0], "cold": cold, "warm": warm}


def in_mlflow_venv(code: str) -> str:
    python = str(MLFLOW_VENV / "bin" / "python")
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def install_mlflow() -> str:
    """MLflow's version, installing it (with uv, for its uv manager) into MLFLOW_VENV if needed."""
    if not all((MLFLOW_VENV / "bin" / tool).exists() for tool in ("mlflow", "uv")):
        print(f"installing MLflow into {MLFLOW_VENV} (pip install mlflow uv) ...", flush=True)
        if not (MLFLOW_VENV / "bin" / "python").exists():
            run_timed([sys.executable, "-m", "venv", str(MLFLOW_VENV)], dict(os.environ), Path())
        pip = [str(MLFLOW_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "mlflow", "uv"]
        run_timed(pip, dict(os.environ), Path())
    return in_mlflow_venv("import mlflow; print(mlflow.__version__)")


def pyenv_version(prefix: str) -> str | None:
    """The newest Python that pyenv already has for ``prefix`` (``3.11`` -> ``3.11.7``)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = [p.name for p in root.glob(f"{prefix}.*") if re.fullmatch(r"\d+\.\d+\.\d+", p.name)]
    return max(found, key=lambda v: [int(x) for x in v.split(".")], default=None)


Results = dict[str, dict[str, float] | None]


def bench_mlflow(
    root: Path, base: dict[str, str], cold_n: int, warm_n: int
) -> tuple[Results, list[str]]:
    """MLflow's managers' times (None where it failed) and what failed."""
    results: Results = {"virtualenv": None, "uv": None}
    failures: list[str] = []
    env = {**base, "PATH": f"{MLFLOW_VENV / 'bin'}{os.pathsep}{base['PATH']}"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    try:
        print(f"MLflow {install_mlflow()} in {MLFLOW_VENV}")
        init = [str(MLFLOW_VENV / "bin" / "mlflow"), "experiments", "search"]
        run_timed(init, env, root)  # the store's migrations are not part of a build
    except BenchError as exc:
        return results, [f"MLflow could not be installed or started: {exc}"]
    mlflow = str(MLFLOW_VENV / "bin" / "mlflow")
    argv = [mlflow, "run", str(root / "project"), "--env-manager", "virtualenv"]
    try:
        if shutil.which("pyenv", path=env["PATH"]) is None:
            raise BenchError("MLflow's virtualenv manager needs pyenv on PATH; there is none.")
        results["virtualenv"] = measure("mlflow virtualenv", argv, env, root / "mv", cold_n, warm_n)
    except BenchError as exc:
        failures.append(f"MLflow virtualenv, python {PYTHON!r}: {exc}")
        pinned = pyenv_version(PYTHON)
        if pinned and "pyenv" in str(exc):
            argv[2] = str(write_project(root / "project-pinned", pinned))
            failures.append(f"  => so MLflow virtualenv was measured with python {pinned!r}")
            try:
                label = f"mlflow virtualenv {pinned}"
                results["virtualenv"] = measure(label, argv, env, root / "mvp", cold_n, warm_n)
            except BenchError as again:
                failures.append(f"MLflow virtualenv, python {pinned!r}: {again}")
    if in_mlflow_venv(HAS_UV) != "uv":
        return results, [*failures, "MLflow uv: this MLflow has no uv env manager."]
    argv = [mlflow, "run", str(root / "project"), "--env-manager", "uv"]
    try:
        results["uv"] = measure("mlflow uv", argv, env, root / "mu", cold_n, warm_n)
    except BenchError as exc:
        failures.append(f"MLflow uv: {exc}")
    return results, failures


def table(ours: dict[str, float], theirs: Results, skipped: bool, cold_n: int, warm_n: int) -> None:
    def row(measure: str, key: str, target: str, verdict: str) -> list[str]:
        def show(value: float) -> str:
            return f"{value * 1000:.0f} ms" if key == "warm" else f"{value:.1f} s"

        cells = [measure, show(ours[key])]
        for manager in ("virtualenv", "uv"):
            value = (theirs[manager] or {}).get(key)
            shown = "skipped" if skipped else "failed" if value is None else show(value)
            cells += [shown, "-" if value is None else f"{value / ours[key]:.1f}x"]
        return [*cells, target, verdict]

    baseline = (theirs["virtualenv"] or {}).get("cold")
    speedup = None if baseline is None else baseline / ours["cold"]
    rows = [
        [*HEADER, ""],
        row(
            f"cold build, warm package cache (median of {cold_n})",
            "cold",
            f">= {RATIO_TARGET:.0f}x vs virtualenv",
            "-" if speedup is None else "PASS" if speedup >= RATIO_TARGET else "FAIL",
        ),
        row("cold build, empty package cache (1 run)", "empty", "(information)", ""),
        row(
            f"warm start: launch -> command (median of {warm_n})",
            "warm",
            f"< {WARM_TARGET} s",
            "PASS" if ours["warm"] < WARM_TARGET else "FAIL",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rows.insert(1, ["-" * w for w in widths])
    print()
    for cells in rows:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    print("\nratio: MLflow's time / reprorun's (higher: reprorun is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, help="runs per measure (default: 3 cold, 10 warm)")
    parser.add_argument("--skip-mlflow", action="store_true", help="measure reprorun only")
    args = parser.parse_args()
    cold_n, warm_n = (args.repeat, args.repeat) if args.repeat else (3, 10)

    base = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    base.pop("PYTHONDONTWRITEBYTECODE", None)  # tools start as installed, with bytecode
    theirs: Results = {"virtualenv": None, "uv": None}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="env-bench-") as tmp:
        root = Path(tmp)
        write_project(root / "project", PYTHON)
        argv = [*reprorun_argv(), "run", str(root / "project"), "--env-manager", "uv"]
        try:
            ours = measure("reprorun uv", argv, base, root / "rr", cold_n, warm_n)
        except BenchError as exc:
            sys.exit(f"reprorun failed: {exc}")
        if not args.skip_mlflow:
            theirs, failures = bench_mlflow(root, base, cold_n, warm_n)
    table(ours, theirs, args.skip_mlflow, cold_n, warm_n)
    for failure in failures:
        print(failure)


if __name__ == "__main__":
    main()
