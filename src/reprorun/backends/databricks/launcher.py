"""reprorun's launcher on a Databricks cluster (the run's spark_python_task): unpack the
project and reprorun's client, then run the project's command with bash in its folder with the
run's variables. Its output is the task's output; a command that fails fails the task.

Run by the cluster's own Python, which may be older than reprorun's: standard library only,
kept plain (not typed, os.path) on purpose. The backend uploads this file as it is.
"""
# mypy: ignore-errors
# ruff: noqa: PTH101, PTH102, PTH118, PTH120, S103, S202, UP031

import json
import os
import subprocess
import sys
import tarfile
import tempfile

MARKER = "[reprorun] the command exited with code "
WRAPPER = "reprorun.tracking.heartbeat"


def unpack(archive, into):
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(into, filter="tar")
        else:
            tar.extractall(into)


def command_argv(command, heartbeat, cwd, env, metrics=None):
    """bash running the command, under reprorun's heartbeat wrapper (a beat and the log so
    far every ``heartbeat`` seconds, the system metrics every ``metrics`` seconds when given)
    when given and when this Python can import it."""
    argv = ["bash", "-c", command]
    if not heartbeat:
        return argv
    check = [sys.executable, "-c", "import " + WRAPPER]
    if subprocess.call(
        check, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ):
        return argv  # an older Python than the client's: the command alone, as before
    sampling = ["--system-metrics", metrics] if metrics else []
    return [sys.executable, "-m", WRAPPER, "--every", heartbeat, *sampling, "--", *argv]


def main(argv):
    args = dict(arg.split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    work = tempfile.mkdtemp(prefix="reprorun-")
    unpack(args["--project"], work)
    unpack(args["--client"], work)
    project = os.path.join(work, "mlflow-project")
    cwd = os.path.join(project, args["--subdirectory"]) if args["--subdirectory"] else project
    env = dict(os.environ)
    env.update(json.loads(args["--env"]))
    client = os.path.join(work, "client")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (client, env.get("PYTHONPATH")) if p)
    # `python` and `reprorun` in the command: this interpreter, which has the libraries.
    bin_dir = os.path.join(work, "bin")
    os.mkdir(bin_dir)
    shim = os.path.join(bin_dir, "reprorun")
    with open(shim, "w") as f:
        f.write('#!/bin/sh\nexec "%s" -m reprorun "$@"\n' % sys.executable)
    os.chmod(shim, 0o755)
    path = [bin_dir, os.path.dirname(sys.executable), env.get("PATH", "")]
    env["PATH"] = os.pathsep.join(p for p in path if p)
    proc = subprocess.Popen(
        command_argv(
            args["--command"], args.get("--heartbeat"), cwd, env, args.get("--system-metrics")
        ),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = getattr(sys.stdout, "buffer", None)
    last = b"\n"
    for chunk in iter(lambda: proc.stdout.read1(65536), b""):
        if out is not None:
            out.write(chunk)
        else:
            sys.stdout.write(chunk.decode("utf-8", "replace"))
        sys.stdout.flush()
        last = chunk[-1:]
    code = proc.wait()
    sys.stdout.write(("" if last == b"\n" else "\n") + MARKER + str(code) + "\n")
    sys.stdout.flush()
    if code != 0:
        raise RuntimeError("reprorun: the project's command exited with code %d" % code)


if __name__ == "__main__":
    main(sys.argv[1:])
