"""``mlflow.run()`` / ``mlflow.projects.run()`` inside a reprorun run go to reprorun.

MLflow's multistep pattern starts each step from the main step's code with
``mlflow.run(".", "etl", parameters=..., env_manager="local")``. Inside ``reprorun run`` such a
step is run by reprorun (the same store, the same environment cache, the step tagged as a
child of the run that started it), not by MLflow's own runner.

How: the ``.pth`` file that puts reprorun's in-run client in a run's environment imports this
module when the interpreter starts inside a run (``REPRORUN_RUN_ID`` is set). It only installs
an import hook; when (and if) the code imports ``mlflow.projects.backend.loader``, MLflow's
``local`` backend there is replaced by :class:`ReprorunBackend`, which runs the step with the
``reprorun`` command that runs the parent (``REPRORUN_COMMAND``). MLflow's ``run()`` keeps the
rest of its behaviour: it waits, and raises ``ExecutionException`` when the step failed.

Falls back to MLflow's own local backend when the code asks for what reprorun cannot give: a
tracking URI other than the run's own (``mlflow.set_tracking_uri(...)`` elsewhere) or an
existing run to resume (``run_id=``). Standard library only, like the rest of the client.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

LOADER_MODULE = "mlflow.projects.backend.loader"
PARENT_TAG = "mlflow.parentRunId"
RUN_ID_WAIT_SECONDS = 600.0  # fetching a git source and building an environment can be slow


def install() -> None:
    """Watch for MLflow's project backends being imported (once per interpreter)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def patch(loader_module: ModuleType) -> None:
    """Make ``backend="local"`` (MLflow's default) run projects with reprorun."""
    backends = getattr(loader_module, "MLFLOW_BACKENDS", None)
    if isinstance(backends, dict) and "local" in backends:
        backends["local"] = _backend_class(backends["local"])


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != LOADER_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PatchingLoader(spec.loader)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        patch(module)


def _backend_class(mlflow_local: Any) -> type:
    """A backend that runs the project with reprorun, or with MLflow's own ``mlflow_local``
    where reprorun cannot do what the code asks."""

    class ReprorunBackend:
        def run(
            self,
            project_uri: str,
            entry_point: str,
            params: Mapping[str, Any] | None,
            version: str | None,
            backend_config: Mapping[str, Any],
            tracking_uri: str | None,
            experiment_id: str | None,
        ) -> Any:
            reason = _why_not_reprorun(backend_config, tracking_uri)
            if reason is not None:
                print(f"reprorun: mlflow.run() runs with MLflow's own runner: {reason}.")
                return mlflow_local().run(
                    project_uri,
                    entry_point,
                    params,
                    version,
                    backend_config,
                    tracking_uri,
                    experiment_id,
                )
            argv = step_command(
                project_uri,
                entry_point,
                params or {},
                version,
                env_manager=backend_config.get("ENV_MANAGER"),
                experiment_id=experiment_id,
                parent_run_id=_active_run_id(),
            )
            return start_step(argv)

    return ReprorunBackend


def _why_not_reprorun(backend_config: Mapping[str, Any], tracking_uri: str | None) -> str | None:
    if not os.environ.get("REPRORUN_COMMAND") or not os.environ.get("REPRORUN_TRACKING_URI"):
        return "this run's environment does not name the reprorun command"
    if backend_config.get("_mlflow_local_backend_run_id"):
        return "it resumes an existing run (run_id=...), which reprorun does not do"
    own = os.environ.get("MLFLOW_TRACKING_URI")
    if tracking_uri and own and tracking_uri.rstrip("/") != own.rstrip("/"):
        return f"the code logs to another tracking URI ({tracking_uri})"
    return None


def _active_run_id() -> str | None:
    """The run the step belongs under: MLflow's active run, else the reprorun run itself."""
    mlflow = sys.modules.get("mlflow")
    active = getattr(mlflow, "active_run", None) if mlflow is not None else None
    run = active() if callable(active) else None
    if run is not None:
        return str(run.info.run_id)
    return os.environ.get("MLFLOW_RUN_ID") or os.environ.get("REPRORUN_RUN_ID")


def step_command(
    project_uri: str,
    entry_point: str,
    params: Mapping[str, Any],
    version: str | None,
    *,
    env_manager: str | None,
    experiment_id: str | None,
    parent_run_id: str | None,
) -> list[str]:
    """The ``reprorun run`` command line of one step (without ``--run-id-file``)."""
    argv = [os.environ["REPRORUN_COMMAND"], "run", project_uri, "-e", entry_point]
    argv += ["--tracking-uri", os.environ["REPRORUN_TRACKING_URI"]]
    for option, value in (
        ("--version", version),
        ("--env-manager", env_manager),
        ("--experiment-id", experiment_id),
    ):
        if value:
            argv += [option, str(value)]
    if parent_run_id:
        argv += ["--tag", f"{PARENT_TAG}={parent_run_id}"]
    for key, value in params.items():
        argv += ["-P", f"{key}={value}"]
    return argv


def start_step(argv: list[str]) -> Any:
    """Start ``reprorun run`` and return MLflow's SubmittedRun for it once the run exists."""
    from mlflow.projects.submitted_run import SubmittedRun  # type: ignore[import-not-found]

    folder = Path(tempfile.mkdtemp(prefix="reprorun-step-"))
    id_file = folder / "run-id"
    process = subprocess.Popen([*argv, "--run-id-file", str(id_file)], start_new_session=True)
    deadline = time.monotonic() + RUN_ID_WAIT_SECONDS
    while not id_file.is_file() or not id_file.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                _stop(process)
            from mlflow.exceptions import ExecutionException  # type: ignore[import-not-found]

            raise ExecutionException(
                f"reprorun could not start the step ({' '.join(argv[1:5])}): see its message above."
            )
        time.sleep(0.05)
    run_id = id_file.read_text().strip()
    shutil.rmtree(folder, ignore_errors=True)

    class ReprorunSubmittedRun(SubmittedRun):  # type: ignore[misc]
        """A step run by ``reprorun run``: waits for that process."""

        @property
        def run_id(self) -> str:
            return run_id

        def wait(self) -> bool:
            return process.wait() == 0

        def get_status(self) -> str:
            code = process.poll()
            return "RUNNING" if code is None else ("FINISHED" if code == 0 else "FAILED")

        def cancel(self) -> None:
            _stop(process)

    return ReprorunSubmittedRun()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C for ``reprorun run``: it stops the step's command and records the run KILLED."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
