"""Artifacts on S3: reprorun's s3:// artifact functions against MLflow's S3ArtifactRepository,
both on boto3, against one S3 API server on 127.0.0.1 (moto's, started here), same session.

    python bench/s3.py [--quick] [--skip-mlflow]

Measured, median of 3 (seconds, lower is better; the two sides take turns), each into a fresh
prefix of one bucket:
  upload big      one file of 64 MiB (--quick: 16 MiB): multipart, parts of 8 MiB (MLflow's
                  boto3 defaults: 8 MiB too)
  upload tree     a folder of 200 files of 10 KiB (log_dir / log_artifacts)
  list tree       the recursive listing of those 200 files
  download tree   the whole folder back
  download big    the big file back
MLflow 3.17.2 runs in /tmp/bench-mlflow-s3-venv (made when missing with uv: mlflow, boto3).
moto keeps objects in memory in one Python process, so it bounds both sides alike: the table
compares the clients' overheads, not S3's throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

VENV = Path("/tmp/bench-mlflow-s3-venv")
MLFLOW = "3.17.2"
REPEATS = 3
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1",
}

MLFLOW_SIDE = """
import json, statistics, sys, tempfile, time, uuid
from pathlib import Path
from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

bucket, work, repeats = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
times = {}
def timed(name, fn):
    times.setdefault(name, []).append(0.0)
    start = time.perf_counter(); fn(); times[name][-1] = time.perf_counter() - start
for _ in range(repeats):
    repo = S3ArtifactRepository(f"s3://{bucket}/mlflow-{uuid.uuid4().hex[:8]}")
    timed("upload big", lambda: repo.log_artifact(str(work / "big.bin")))
    timed("upload tree", lambda: repo.log_artifacts(str(work / "tree"), "tree"))
    def listing():
        todo, files = ["tree"], 0
        while todo:
            for f in repo.list_artifacts(todo.pop()):
                if f.is_dir: todo.append(f.path)
                else: files += 1
        assert files == 200, files
    timed("list tree", listing)
    with tempfile.TemporaryDirectory() as out:
        timed("download tree", lambda: repo.download_artifacts("tree", out))
    with tempfile.TemporaryDirectory() as out:
        timed("download big", lambda: repo.download_artifacts("big.bin", out))
print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


def mlflow_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"making {VENV} (uv: mlflow=={MLFLOW}, boto3) ...", flush=True)
        subprocess.run(["uv", "venv", "-q", "--python", sys.executable, str(VENV)], check=True)
        subprocess.run(
            ["uv", "pip", "install", "-q", "--python", str(python), f"mlflow=={MLFLOW}", "boto3"],
            check=True,
        )
    return python


def make_inputs(work: Path, big_mib: int) -> None:
    block = os.urandom(1024 * 1024)
    (work / "big.bin").write_bytes(block * big_mib)
    for i in range(200):
        folder = work / "tree" / f"d{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.txt").write_bytes(os.urandom(10 * 1024))


def reprorun_side(bucket: str, work: Path, repeats: int) -> dict[str, float]:
    from reprorun.tracking import artifacts

    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], object]) -> None:
        start = time.perf_counter()
        fn()
        times.setdefault(name, []).append(time.perf_counter() - start)

    for _ in range(repeats):
        uri = f"s3://{bucket}/reprorun-{uuid.uuid4().hex[:8]}"
        timed("upload big", lambda u=uri: artifacts.log_file(u, work / "big.bin"))
        timed("upload tree", lambda u=uri: artifacts.log_dir(u, work / "tree", "tree"))

        def listing(u: str = uri) -> None:
            found = [f for f in artifacts.list_artifacts(u, "tree", recursive=True) if not f.is_dir]
            assert len(found) == 200, len(found)

        timed("list tree", listing)
        with tempfile.TemporaryDirectory() as out:
            timed("download tree", lambda u=uri, o=out: artifacts.download(u, "tree", o))
        with tempfile.TemporaryDirectory() as out:
            timed("download big", lambda u=uri, o=out: artifacts.download(u, "big.bin", o))
    return {k: statistics.median(v) for k, v in times.items()}


def mlflow_side(bucket: str, work: Path, env: dict[str, str]) -> dict[str, float]:
    result = subprocess.run(
        [str(mlflow_python()), "-c", MLFLOW_SIDE, bucket, str(work), "1"],
        env={**os.environ, **env, "MLFLOW_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"MLflow's side failed:\n{result.stderr}")
    times: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 MiB, one repeat")
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    repeats = 1 if args.quick else REPEATS
    big = 16 if args.quick else 64
    moto, url = start_moto()
    env = {**CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": url}
    os.environ.update(env)
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    try:
        import boto3

        bucket = "bench-artifacts"
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=bucket)
        make_inputs(work, big)
        # The two sides alternate, one repeat each, so a busy machine slows both alike.
        ours_runs: list[dict[str, float]] = []
        theirs_runs: list[dict[str, float]] = []
        reprorun_side(bucket, work, 1)  # warm-up: boto3's import and client
        for _ in range(repeats):
            ours_runs.append(reprorun_side(bucket, work, 1))
            if not args.skip_mlflow:
                theirs_runs.append(mlflow_side(bucket, work, env))
        ours = {k: statistics.median(r[k] for r in ours_runs) for k in ours_runs[0]}
        theirs = {k: statistics.median(r[k] for r in theirs_runs) for k in ours if theirs_runs}
        print(f"\nS3 artifacts against moto on 127.0.0.1 (big file {big} MiB, median of {repeats})")
        print(f"{'measure':<15}{'reprorun (s)':>14}{'MLflow (s)':>12}{'ratio':>8}")
        for name, value in ours.items():
            other = theirs.get(name)
            ratio = f"{other / value:.2f}x" if other else "-"
            shown = f"{other:.3f}" if other else "-"
            print(f"{name:<15}{value:>14.3f}{shown:>12}{ratio:>8}")
    finally:
        moto.kill()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
