"""What the databricks backend ships to the workspace (the project's tree and reprorun's
client as reproducible tarballs, the launcher, the lock's packages as libraries) and the body of
``runs/submit`` that runs it."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from reprorun.backends.base import LaunchSpec
from reprorun.backends.databricks.options import DatabricksBackendConfig
from reprorun.envs.lock import read_lock_lines
from reprorun.errors import ExecutionError

PROJECTS_DIR = "/mlflow-experiments/{experiment_id}/projects-code"  # MLflow's place in DBFS
CLIENT_DIR = "/reprorun/client"
LAUNCHER_DIR = "/reprorun/launcher"
LAUNCHER = Path(__file__).with_name("launcher.py")  # run on the cluster; uploaded as it is
ARCHIVE_ROOT = "mlflow-project"  # the one folder of a project's tarball (as MLflow's)
TASK_KEY = "reprorun"
EXIT_MARKER = "[reprorun] the command exited with code "  # the launcher's last line

_TAR_TIME = 315532800  # 1980-01-01: the same tree gives the same tarball, so the same name
# Provided by the Databricks Runtime: a PyPI copy would replace the cluster's own Spark.
_RUNTIME_PACKAGES = frozenset({"pyspark", "py4j", "databricks-connect"})


def pack_tree(
    root: Path, out: IO[bytes], prefix: str, skip: Callable[[str], bool] | None = None
) -> None:
    """A gzipped tar of ``root``'s files under ``prefix/``, without .git (or what ``skip``
    refuses, by name), byte-for-byte the same for the same tree (sorted, fixed dates and
    owners); modes and symlinks are kept."""
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in _walk(root, skip or (lambda name: name == ".git")):
            info = tar.gettarinfo(str(path), f"{prefix}/{path.relative_to(root).as_posix()}")
            info.mtime = _TAR_TIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with path.open("rb") as src:
                    tar.addfile(info, src)
            elif info.isdir() or info.issym():
                tar.addfile(info)


def _walk(root: Path, skip: Callable[[str], bool]) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not skip(d))
        here = Path(folder)
        if here != root:
            yield here
        for name in sorted(files):
            if not skip(name):  # .git as a file: a submodule's link to its repository
                yield here / name
        for name in dirs:
            if (here / name).is_symlink():
                yield here / name  # os.walk lists a link to a folder as a folder


def pack_client(out: IO[bytes]) -> None:
    """reprorun's package as ``client/reprorun`` (its in-run client needs only the standard
    library). Only sources: caches differ between machines and would change the name."""
    from reprorun.envs.client import package_dir

    package = package_dir()

    def skip(name: str) -> bool:
        return name == "__pycache__" or name.endswith(".pyc")

    pack_tree(package, out, "client/reprorun", skip)


def lock_libraries(lock_text: str | None) -> list[dict[str, Any]]:
    """The lock's packages as the task's PyPI libraries, minus those the Databricks Runtime
    provides itself (pyspark, py4j). Packages installed from this machine's files cannot be
    installed on the cluster (nor can pip's options, which are no library): refused, naming
    them."""
    lock = read_lock_lines(lock_text)
    local = [*lock.local, *(line for line in lock.pip if line.startswith("-"))]
    if local:
        raise ExecutionError(
            "The environment's lock installs packages from this machine's files, which the "
            f"Databricks cluster cannot install: {'; '.join(local)}. Publish them to an index "
            "the workspace reaches (or a git URL), pin that in the project's environment, and "
            "rerun."
        )
    libraries: list[dict[str, Any]] = []
    for line in lock.pip:
        name = re.split(r"[\s=<>!~\[;@(]", line, maxsplit=1)[0].lower().replace("_", "-")
        if name not in _RUNTIME_PACKAGES:
            libraries.append({"pypi": {"package": line}})
    return libraries


def write_launcher(out: IO[bytes]) -> None:
    out.write(LAUNCHER.read_bytes())


def launcher_parameters(
    project: str,
    client: str,
    subdirectory: str,
    command: str,
    env: Mapping[str, str],
    heartbeat: float | None = None,
    metrics: float | None = None,
) -> list[str]:
    """The launcher's arguments (``--name=value``: a command starting with '-' stays a value).
    ``heartbeat``: seconds between the heartbeats (and live log uploads) of the command;
    ``metrics``: seconds between its samples of the system metrics (None: off)."""
    parameters = [
        f"--project={fuse_path(project)}",
        f"--client={fuse_path(client)}",
        f"--subdirectory={subdirectory}",
        f"--command={command}",
        f"--env={json.dumps(dict(sorted(env.items())))}",
    ]
    if heartbeat is not None:
        parameters.append(f"--heartbeat={heartbeat:g}")
    if metrics:
        parameters.append(f"--system-metrics={metrics:g}")
    return parameters


def fuse_path(dbfs_path: str) -> str:
    """Where the cluster's nodes see a DBFS file (the /dbfs mount, as MLflow's command)."""
    return "/dbfs" + dbfs_path


def submit_body(
    config: DatabricksBackendConfig,
    spec: LaunchSpec,
    launcher: str,
    parameters: list[str],
    libraries: list[dict[str, Any]],
) -> dict[str, Any]:
    """The body of ``runs/submit``: one task on a new cluster; the run's id as the
    idempotency token, so a retried submission never starts a second run."""
    task: dict[str, Any] = {
        "task_key": TASK_KEY,
        "new_cluster": config.cluster(),
        "spark_python_task": {"python_file": f"dbfs:{launcher}", "parameters": parameters},
    }
    if libraries:
        task["libraries"] = libraries
    body: dict[str, Any] = {
        "run_name": f"reprorun {spec.run_id}",
        "idempotency_token": spec.run_id,
        "tasks": [task],
    }
    timeout = run_timeout(config.timeout_seconds, spec.timeout_seconds)
    if timeout is not None:
        body["timeout_seconds"] = timeout
    return body


def run_timeout(own: int | None, timeout: float | None) -> int | None:
    """The run's ``timeout_seconds``: ``--timeout`` (whole seconds, rounded up) where it is
    shorter than the config's own (0 there: no limit); Databricks then ends it TIMEDOUT."""
    if not timeout:
        return own
    limit = max(1, math.ceil(timeout))
    return own if own and own <= limit else limit
