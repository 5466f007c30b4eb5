"""Real engines for the backend tests, started on this machine (loopback only) by the scripts
of the engines folder ($ENGINES, default /work/shared/engines; see its README), or given by CI.

Each engine has a section of its own below.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ENGINES = Path(os.environ.get("ENGINES", "/work/shared/engines"))


def _script(
    name: str, timeout: float, path_first: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an engines script, without the tests' REPRORUN_*/MLFLOW_* variables (the engine
    would pass them on to every job it runs); ``path_first`` goes first on its PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    if path_first:
        env["PATH"] = os.pathsep.join([path_first, env.get("PATH", os.defpath)])
    return subprocess.run(
        ["bash", str(ENGINES / name)], capture_output=True, text=True, timeout=timeout, env=env
    )


# --- Ray ------------------------------------------------------------------------------------

# Read at import: the autouse clean_environ fixture hides REPRORUN_* variables during tests.
RAY_ADDRESS = os.environ.get("REPRORUN_TEST_RAY_ADDRESS", "").strip() or None
RAY_DEFAULT_ADDRESS = "http://127.0.0.1:28265"  # what ray-up.sh starts
# The Python ray-up.sh installs Ray into: first on the head's PATH, it is the `python` of every
# job, as on a real cluster, where reprorun is not installed (the tests ship its client).
RAY_VENV = os.environ.get("RAY_VENV", "/tmp/ray-ci-venv")


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """The Jobs API address of a Ray head: REPRORUN_TEST_RAY_ADDRESS (CI started it), else
    one started by ray-up.sh (from Ray's own venv, which has no reprorun) and stopped at the
    end of the session, unless it was already up (then someone else owns it)."""
    if RAY_ADDRESS:
        yield RAY_ADDRESS
        return
    up = _script("ray-up.sh", timeout=600, path_first=f"{RAY_VENV}/bin")
    if up.returncode != 0:
        pytest.fail(f"{ENGINES / 'ray-up.sh'} failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield RAY_DEFAULT_ADDRESS
    finally:
        if "already up" not in up.stdout:
            _script("ray-down.sh", timeout=120)


# --- Slurm ----------------------------------------------------------------------------------

# Read at import, like RAY_ADDRESS: "1" means CI started the cluster (slurm-up.sh) itself.
SLURM_STARTED_BY_CI = os.environ.get("REPRORUN_TEST_SLURM", "").strip() == "1"


def _slurmctld_alive() -> bool:
    """Whether slurm-up.sh's controller runs (its pid file names a live process)."""
    try:
        os.kill(int(Path("/run/slurmctld.pid").read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """A single-node Slurm cluster on this machine; yields its default partition. With
    REPRORUN_TEST_SLURM=1 CI started it; else slurm-up.sh starts it (installing Debian's
    slurm-wlm and munge if needed) and slurm-down.sh stops it at the end of the session,
    unless it was already running (then someone else owns it)."""
    owned = False
    if not SLURM_STARTED_BY_CI:
        owned = not _slurmctld_alive()
        up = _script("slurm-up.sh", timeout=600)
        if up.returncode != 0:
            pytest.fail(f"{ENGINES / 'slurm-up.sh'} failed:\n{up.stdout}\n{up.stderr}")
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    if sinfo.returncode != 0:
        pytest.fail(f"the Slurm cluster does not answer: sinfo said {sinfo.stderr.strip()}")
    default = [p for p in sinfo.stdout.split() if p.endswith("*")] or sinfo.stdout.split()
    try:
        yield default[0].rstrip("*")
    finally:
        if owned:
            _script("slurm-down.sh", timeout=120)
