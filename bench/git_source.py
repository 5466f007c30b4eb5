"""Projects from a git URL: clone, cache hit and incremental fetch, with the real `reprorun run`.

    python bench/git_source.py [--repeat 5] [--files 2000]

A throw-away repository (MLproject `command: 'true'`, --files small files) served by
`git daemon` on 127.0.0.1. Median of --repeat real `reprorun run` invocations:
  (a) first run from the git:// URL, a fresh REPRORUN_HOME each time: a full mirror clone;
  (b) second run of the same commit (--version COMMIT): cache hit; and the source step alone,
      `resolve_source(url, version=commit)` in-process (target: under 50 ms);
  (c) run after a push of a new commit: incremental fetch and a new snapshot.
`mlflow run` on the same URL is timed too when the mlflow command is installed.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

from run_overhead import reprorun_argv, timed

SOURCE_STEP_TARGET_MS = 50.0
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "gc.auto=0"]


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def make_repository(root: Path, files: int) -> Path:
    work = root / "work"
    (work / "src").mkdir(parents=True)
    (work / "MLproject").write_text("name: bench\nentry_points:\n  main:\n    command: 'true'\n")
    for i in range(files):
        folder = work / "src" / f"pkg{i % 40:02d}" / f"mod{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{i:05d}.py").write_text(f"VALUE = {i}\n" + "# padding\n" * 20)
    for step in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "initial"]):
        git(*step, cwd=work)
    git("clone", "-q", "--bare", str(work), str(root / "served" / "repo.git"), cwd=root)
    git("remote", "add", "served", str(root / "served" / "repo.git"), cwd=work)
    return work


def start_daemon(served: Path) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as sock:  # a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", f"--base-path={served}", "--export-all",
         "--listen=127.0.0.1", f"--port={port}", str(served)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while subprocess.run(
        ["git", "ls-remote", f"git://127.0.0.1:{port}/repo.git"], capture_output=True
    ).returncode:
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.terminate()
            raise SystemExit("git daemon did not start")
        time.sleep(0.1)
    return daemon, port


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    n = args.repeat
    for name in ("reprorun", "yaml"):  # bytecode first, as an installed package has it
        origin = importlib.util.find_spec(name).origin  # type: ignore[union-attr]
        compileall.compile_dir(str(Path(origin).parent), quiet=1)  # type: ignore[arg-type]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = make_repository(root, args.files)
        daemon, port = start_daemon(root / "served")
        url = f"git://127.0.0.1:{port}/repo.git"
        try:
            base = {k: v for k, v in os.environ.items() if not k.startswith("REPRORUN_")}
            run = [*reprorun_argv(), "run", url, "--env-manager", "local"]
            clone = [timed(run, {**base, "REPRORUN_HOME": str(root / f"cold{i}")}, root)
                     for i in range(n)]  # fmt: skip
            env = {**base, "REPRORUN_HOME": str(root / "cold0")}
            commit = git("rev-parse", "HEAD", cwd=work)
            hit = [timed([*run, "--version", commit], env, root) for _ in range(n)]

            os.environ["REPRORUN_HOME"] = env["REPRORUN_HOME"]
            from reprorun.sources import resolve_source

            step = timeit.repeat(lambda: resolve_source(url, version=commit), number=1, repeat=n)

            fetch = []
            for i in range(n):
                (work / "MLproject").write_text((work / "MLproject").read_text() + f"# {i}\n")
                git("commit", "-qam", f"change {i}", cwd=work)
                git("push", "-q", "served", "main", cwd=work)
                fetch.append(timed(run, env, root))
            listing = subprocess.run([*reprorun_argv(), "runs", "list", "--json"], env=env,
                                     capture_output=True, text=True, check=True).stdout  # fmt: skip
            latest = json.loads(listing)[0]["data"]["tags"]["mlflow.source.git.commit"]
            assert latest == git("rev-parse", "HEAD", cwd=work), "the push was not seen"

            # The mlflow command on PATH, else the one bench/env_build.py installs for itself.
            bench_venv = Path("/tmp/bench-mlflow-venv/bin/mlflow")
            mlflow = shutil.which("mlflow") or (str(bench_venv) if bench_venv.exists() else None)
            mlflow_note = "the mlflow command is not installed here"
            mlflow_times: list[float] = []
            if mlflow:
                mlenv = {**env, "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri()}
                try:
                    argv = [mlflow, "run", url, "--env-manager", "local"]
                    mlflow_times = [timed(argv, mlenv, root) for _ in range(n)]
                except subprocess.CalledProcessError as exc:
                    mlflow_note = f"`mlflow run` failed here (exit {exc.returncode})"
        finally:
            # SIGTERM: `git daemon` is a wrapper that passes it on to the git-daemon it
            # started; SIGKILL would leave that one listening.
            daemon.terminate()
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()

    def median_ms(seconds: list[float]) -> float:
        return statistics.median(seconds) * 1000

    step_ms = median_ms(step)
    rows = [
        ("(a) first run from git URL (clone)", median_ms(clone), "", ""),
        ("(b) second run, same commit (cache hit)", median_ms(hit), "", ""),
        ("(b) source step alone (resolve_source)", step_ms, f"< {SOURCE_STEP_TARGET_MS:.0f} ms",
         "PASS" if step_ms < SOURCE_STEP_TARGET_MS else "FAIL"),
        ("(c) run after a push (incremental fetch)", median_ms(fetch), "", ""),
    ]  # fmt: skip
    if mlflow_times:
        rows.append(("mlflow run (same URL)", median_ms(mlflow_times), "", ""))
    print(f"git:// on 127.0.0.1, {args.files} files, median of {n}, python {sys.version[:6]}")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'median':>10}  {'target':>8}  verdict")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 8}  -------")
    for name, value, target, verdict in rows:
        print(f"{name.ljust(width)}  {value:7.1f} ms  {target:>8}  {verdict}")
    if not mlflow_times:
        print(f"\nmlflow run: not measured, so no comparison ({mlflow_note}).")


if __name__ == "__main__":
    main()
