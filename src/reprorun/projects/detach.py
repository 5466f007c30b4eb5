"""Detached local runs (``reprorun run --detach``).

The submitting process does everything that can fail on bad input (plan, environment, the run
itself), then hands the command to a supervisor: ``python -m reprorun.projects.detach SPEC``,
a process in a session of its own, so closing the terminal does not reach it. The supervisor
holds the environment, waits its turn in the local queue, starts the command, stores its log,
keeps the run's status current and ends it; SIGTERM (``reprorun runs kill``) stops the command
and marks the run KILLED. If the supervisor itself is killed with SIGKILL, its command dies
with it (parent-death signal) and the next reader of the run closes it FAILED
(``backends.supervised``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from reprorun.backends.base import LaunchSpec, SubmittedRun
from reprorun.backends.supervised import SupervisedRun
from reprorun.config import home
from reprorun.errors import ExecutionError, RunNotRecorded
from reprorun.projects.lifecycle import (
    Finish,
    Stopper,
    end_unlaunched,
    mlflow_env,
    use_mlflow_env,
)

READY = b"ready\n"
START_TIMEOUT_SECONDS = 60.0


def launch_detached(spec: LaunchSpec, finish: Finish, grace: float, sidecar: bool) -> SubmittedRun:
    """Start the supervisor of ``spec``'s run and return once it has taken the run over. If
    anything interrupts the hand-over (Ctrl-C, a supervisor that does not answer), the
    supervisor is stopped too: no command runs for a run this process gave up."""
    folder = home() / "supervisors"
    spec_file = folder / f"{spec.run_id}.json"
    data = {
        "spec": spec.to_json(),
        "stop_grace_seconds": grace,
        "staged": [str(p) for p in finish.staged] if finish.staged else None,
        "env_dir": str(finish.env_dir) if finish.env_dir else None,
        "sidecar": sidecar,  # start the run's loopback MLflow endpoint
    }
    # The environment may hold secrets: only its owner may read the file (the supervisor
    # deletes it once read).
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
    except OSError as exc:
        spec_file.unlink(missing_ok=True)
        raise ExecutionError(
            f"Cannot write the run's supervisor file {spec_file}: {exc.strerror or exc}. "
            f"Free space in {folder} or make it writable, then run again."
        ) from exc
    errors = folder / f"{spec.run_id}.err"
    supervisor: int | None = None
    try:
        with open(errors, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reprorun.projects.detach", str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # no controlling terminal: closing ours does not reach it
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        assert proc.stdout is not None
        with proc.stdout:
            supervisor, ready = _handshake(proc.stdout.fileno(), START_TIMEOUT_SECONDS)
        proc.wait(START_TIMEOUT_SECONDS)  # the first process only forks the supervisor
        if not ready:
            detail = errors.read_text(errors="replace").strip()[-2000:]
            raise ExecutionError(
                f"The run's supervisor did not start within {START_TIMEOUT_SECONDS:.0f} s: "
                f"{detail or 'no output'} (its log: {errors})"
            )
    except BaseException:
        if supervisor is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(supervisor, signal.SIGTERM)  # it ends the run KILLED, or never starts it
        spec_file.unlink(missing_ok=True)
        raise
    errors.unlink(missing_ok=True)
    # The supervisor holds its own lease on the environment and uploads staged artifacts.
    finish.staged = None
    finish()
    return SupervisedRun(spec.store.get_run(spec.run_id), spec.store, grace)


def _handshake(fd: int, timeout: float) -> tuple[int | None, bool]:
    """Read the supervisor's "pid N" and "ready" lines; (its pid, whether it is ready)."""
    import select

    deadline = time.monotonic() + timeout
    buffer = b""
    pid = None
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break  # it exited before saying it was ready
        buffer += chunk
        for line in buffer.split(b"\n"):
            if line.startswith(b"pid ") and line[4:].isdigit():
                pid = int(line[4:])
        if READY in buffer:
            return pid, True
    return pid, False


def supervise(spec_file: Path) -> int:
    """The supervisor's life: take the run over, run the command, end the run."""
    from reprorun._utils import process_identity
    from reprorun.backends.base import LocalBackendConfig
    from reprorun.backends.local import LocalBackend
    from reprorun.backends.supervised import STOPS_ON_SIGTERM_TAG
    from reprorun.config import resolve_tracking
    from reprorun.envs.cache import hold
    from reprorun.tracking.entities import SystemTags
    from reprorun.tracking.store import open_store

    data = json.loads(spec_file.read_text())
    spec_file.unlink(missing_ok=True)
    stopper = Stopper()  # from the start: a SIGTERM while starting ends the run KILLED
    with stopper.installed():
        submitted_spec = json.loads(data["spec"])
        run_id = submitted_spec["run_id"]
        target = resolve_tracking(submitted_spec["tracking_uri"])
        store = open_store(target.uri)
        release = hold(Path(data["env_dir"])) if data["env_dir"] else None
        store.set_tags(
            run_id,
            {
                SystemTags.SUPERVISOR: process_identity(os.getpid()),
                STOPS_ON_SIGTERM_TAG: "true",
            },
        )
        finish = Finish(store, run_id, release)
        if data["staged"]:
            folder, artifact_uri, tracking_uri = data["staged"]
            finish.upload(Path(folder), artifact_uri, tracking_uri)
        with contextlib.suppress(BrokenPipeError):  # a submitter gone: the run is ours now
            sys.stdout.buffer.write(f"pid {os.getpid()}\n".encode() + READY)
            sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # nothing may block on the submitter's pipe
        if store.get_run(run_id).info.status.is_terminal:
            finish.staged = None
            finish()
            return 0  # ended while we started (its submitter was stopped): nothing to run
        try:
            spec = LaunchSpec.from_json(
                data["spec"],
                store=store,
                on_finish=finish,
                interrupted=lambda: stopper.check(run_id),
                tied_to_caller=True,
            )
            if data["sidecar"]:
                mlflow_uri = finish.mlflow_endpoint(target, in_container=False)
                if mlflow_uri:
                    env = dict(spec.env)
                    mlflow = mlflow_env(mlflow_uri, run_id, spec.experiment_id, finish.mlflow_token)
                    use_mlflow_env(env, mlflow)
                    spec = dataclasses.replace(spec, env=env)
            backend = LocalBackend(LocalBackendConfig(data["stop_grace_seconds"]))
            stopper.check(run_id)
            submitted = backend.submit(spec)
        except BaseException as exc:
            finish()
            end_unlaunched(store, run_id, exc)
            return 1
        stopper.attach(submitted)
        try:
            submitted.wait()
        except RunNotRecorded:
            return 1  # the end is kept in the journal: the next reader records it
        from reprorun.backends.notify import notify_end

        notify_end(store, run_id, spec.experiment_id)  # REPRORUN_NOTIFY, the experiment's tag
    return 0


if __name__ == "__main__":
    # Fork once more and let the first process exit: the supervisor is nobody's child, so
    # no submitter has to reap it (a long-lived Python program starting many runs).
    if os.fork() != 0:
        os._exit(0)
    sys.exit(supervise(Path(sys.argv[1])))
