"""A run's files on this machine: where its command runs (the project folder, or a working
copy of a cached snapshot), its artifact folder, the uncommitted changes kept with it, and the
container a docker_env project runs in."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reprorun.config import TrackingTarget
from reprorun.envs.base import PreparedEnv
from reprorun.errors import ExecutionError
from reprorun.projects.planning import RunPlan
from reprorun.sources import Provenance
from reprorun.tracking.artifacts import local_dir
from reprorun.tracking.entities import SystemTags

DIFF_ARTIFACT = "source/uncommitted.diff"
LOCK_ARTIFACT = "environment/requirements.lock"


def store_uncommitted_diff(
    store: Any, run_id: str, prov: Provenance, artifact_dir: Path, patch: Path | None
) -> None:
    """A dirty checkout's changes, kept with the run so it can be reproduced (rerun). A rerun
    that applies such changes keeps them too, so a rerun of a rerun runs the same code."""
    if patch is not None:
        target = artifact_dir / DIFF_ARTIFACT
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(patch.read_bytes())
        store.set_tags(run_id, {SystemTags.GIT_DIFF: DIFF_ARTIFACT, SystemTags.GIT_DIRTY: "true"})
        return
    if not prov.git_dirty:
        return
    if prov.uncommitted_diff is None:
        store.set_tag(run_id, SystemTags.GIT_DIFF, "too large to store")
        return
    target = artifact_dir / DIFF_ARTIFACT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(prov.uncommitted_diff)
    store.set_tag(run_id, SystemTags.GIT_DIFF, DIFF_ARTIFACT)


def working_directory(the_plan: RunPlan, run_id: str, patch: Path | None = None) -> Path:
    """Where the command runs: the project folder itself, or for a cached snapshot (git,
    archive) a working copy of it, so nothing a run writes reaches the snapshot."""
    if the_plan.snapshot is None:
        return the_plan.project.directory
    from reprorun.config import home
    from reprorun.sources.cache import working_copy

    work = working_copy(the_plan.snapshot, home() / "work" / run_id)
    if patch is not None:
        import subprocess

        applied = subprocess.run(
            ["git", "apply", "--whitespace=nowarn", str(patch)],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if applied.returncode != 0:
            raise ExecutionError(
                f"Cannot apply the stored changes {patch}: {applied.stderr.strip()}"
            )
    return work / the_plan.project.directory.relative_to(the_plan.snapshot)


def staging_uri(run_id: str) -> str:
    from reprorun.config import home

    return (home() / "staging" / run_id).as_uri()


def artifact_dir(artifact_uri: str, experiment_id: str) -> Path:
    folder = local_dir(artifact_uri)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExecutionError(
            f"Cannot create the run's artifact folder {folder}: {exc.strerror}. Experiment "
            f"{experiment_id} keeps its artifacts there; fix the permissions, or record in an "
            "experiment created with another --artifact-location."
        ) from exc
    return folder


def source_root(the_plan: RunPlan, workdir: Path) -> Path:
    """The tree a remote job gets: the whole working copy of a snapshot (the command may use
    files above its subdirectory), else the project folder."""
    if the_plan.snapshot is None:
        return workdir
    depth = len(the_plan.project.directory.relative_to(the_plan.snapshot).parts)
    return workdir.parents[depth - 1] if depth else workdir


def container_argv(
    prepared: PreparedEnv,
    run_id: str,
    command: str,
    workdir: Path,
    env: Mapping[str, str],
    artifact_dir: Path,
    target: TrackingTarget,
    docker_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """For docker_env: the argv that runs the command in a container (with the user's
    ``docker_args``), how to stop it, and the container's run for OOM evidence."""
    if prepared.docker is None:
        return {}
    from reprorun.envs.docker import docker_argv, stop_argv

    mounts = [artifact_dir]
    sqlite_path = target.sqlite_path
    if sqlite_path and sqlite_path != ":memory:":
        mounts.append(Path(sqlite_path).parent)
    assert prepared.client_dir is not None
    from reprorun.projects.downloads import downloads_root

    # Files downloaded for path parameters are read where the command was told they are.
    downloads = downloads_root()
    argv = docker_argv(
        prepared.docker,
        run_id=run_id,
        command=command,
        cwd=workdir,
        env=env,
        mounts=mounts,
        client_dir=prepared.client_dir,
        read_only=(downloads,) if downloads.is_dir() else (),
        docker_args=docker_args,
    )
    return {"argv": argv, "stop_argv": stop_argv(run_id), "container": True}
