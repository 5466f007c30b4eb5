"""Run again what a recorded run ran: same code (commit, plus its stored uncommitted changes),
same entry point, same parameters (overridable), linked to the original by a tag."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from reprorun.errors import SourceNotFound, UserInputError
from reprorun.projects.request import RunRequest
from reprorun.tracking.entities import Run, SystemTags


@dataclass(frozen=True)
class RerunSpec:
    """How to run ``original`` again: what ``projects.run`` receives."""

    original: Run
    uri: str
    version: str | None
    entry_point: str
    parameters: dict[str, str]
    patch: Path | None
    env_manager: str | None
    env_lock: Path | None
    archive_sha256: str | None
    source_tags: dict[str, str]  # the original's source tags that a rerun keeps
    docker_args: tuple[str, ...]  # the original's --docker-args
    warnings: tuple[str, ...]

    def request(
        self,
        *,
        experiment_name: str | None = None,
        run_name: str | None = None,
        tracking_uri: str | None = None,
        synchronous: bool = True,
    ) -> RunRequest:
        """The rerun's request: in the original's experiment unless ``experiment_name``
        names another, tagged with the original's id."""
        return RunRequest(
            self.uri,
            self.entry_point,
            self.parameters,
            version=self.version,
            experiment_id=None if experiment_name else self.original.info.experiment_id,
            experiment_name=experiment_name,
            env_manager=self.env_manager,
            tags={SystemTags.RERUN_OF: self.original.info.run_id, **self.source_tags},
            run_name=run_name,
            tracking_uri=tracking_uri,
            synchronous=synchronous,
            patch=self.patch,
            env_lock=self.env_lock,
            archive_sha256=self.archive_sha256,
            docker_args=self.docker_args,
        )


def _artifact_file(run: Run, rel: str) -> Path:
    """Where one of ``run``'s artifact files is on this machine: in its artifact folder, or a
    copy fetched from S3 (or a tracking server) into ``<home>/staging/rerun-<run id>``; a
    path that does not exist when the run has no such file."""
    from reprorun.tracking.artifacts import download, is_remote, local_path

    uri = run.info.artifact_uri
    if not is_remote(uri):
        return local_path(uri, rel)
    from reprorun.config import home

    folder = home() / "staging" / f"rerun-{run.info.run_id}" / PurePosixPath(rel).parent
    try:
        return download(uri, rel, folder)
    except UserInputError:  # no such artifact: the caller says what is missing
        return folder / PurePosixPath(rel).name


def rerun_spec(run: Run, overrides: Mapping[str, str] | None = None) -> RerunSpec:
    """Work out the source, version and parameters of ``run``; no side effect but a copy of
    its stored diff and lock when its artifacts are not a local folder (S3, a server)."""
    tags = run.data.tags
    kind = tags.get(SystemTags.SOURCE_KIND, "local")
    commit = tags.get(SystemTags.GIT_COMMIT)
    subdir = tags.get(SystemTags.SOURCE_SUBDIRECTORY)
    warnings: list[str] = []
    patch: Path | None = None
    if kind in ("git", "archive"):
        uri = tags.get(SystemTags.SOURCE_URI) or tags.get(SystemTags.SOURCE_NAME, "")
        version = commit if kind == "git" else None
    else:
        project_dir = Path(tags.get(SystemTags.PROJECT_DIR, ""))
        if commit:
            # The local checkout, at the recorded commit, through the git cache.
            root = project_dir
            for _ in Path(subdir).parts if subdir else ():
                root = root.parent
            if not root.exists():
                raise SourceNotFound(
                    f"Run {run.info.run_id} ran from {project_dir}, which no longer exists; "
                    "rerun needs that repository (or a run recorded from a git URL)."
                )
            uri = str(root) + (f"#{subdir}" if subdir else "")
            version = commit
        else:
            uri, version = str(project_dir), None
            warnings.append(
                f"{project_dir} is not under git: rerunning the folder as it is now, which may "
                "differ from what the original run ran"
            )
    # Uncommitted changes: recorded from a dirty checkout, or carried by an earlier rerun.
    diff = tags.get(SystemTags.GIT_DIFF)
    if diff == "too large to store":
        warnings.append(
            "the original run's uncommitted changes were too large to store; "
            "rerunning the bare commit"
        )
    elif diff:
        patch = _artifact_file(run, diff)
    env_manager = tags.get(SystemTags.ENV)
    env_lock: Path | None = None
    if env_manager in ("uv", "virtualenv") and tags.get(SystemTags.ENV_LOCK):
        env_lock = _artifact_file(run, tags[SystemTags.ENV_LOCK])
        if not env_lock.is_file():
            warnings.append(f"the environment lock {env_lock} is missing; rebuilding from the spec")
            env_lock = None
    recorded = tags.get(SystemTags.RUN_PARAMS)
    params: dict[str, str] = json.loads(recorded) if recorded else dict(run.data.params)
    params.update(overrides or {})
    return RerunSpec(
        original=run,
        uri=uri,
        version=version,
        entry_point=tags.get(SystemTags.ENTRY_POINT, "main"),
        parameters=params,
        patch=patch,
        env_manager=env_manager,
        env_lock=env_lock,
        archive_sha256=tags.get(SystemTags.SOURCE_ARCHIVE_SHA256) if kind == "archive" else None,
        # A checkout rerun goes through the local repository, but its code still comes from
        # the original's remote: keep that (and the forge link) on the new run.
        source_tags={
            k: tags[k]
            for k in (
                SystemTags.SOURCE_NAME,
                SystemTags.GIT_REPO_URL,
                SystemTags.LEGACY_GIT_REPO_URL,
                SystemTags.GIT_BRANCH,
                SystemTags.LEGACY_GIT_BRANCH,
            )
            if k in tags and kind == "local"
        },
        docker_args=tuple(json.loads(tags.get(SystemTags.DOCKER_ARGS) or "[]")),
        warnings=tuple(warnings),
    )


def rerun(
    run_id: str,
    parameters: Mapping[str, str] | None = None,
    *,
    experiment_name: str | None = None,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    synchronous: bool = True,
    echo: Any = True,
    on_submit: Callable[[Any], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Any:
    """Run ``run_id`` again; the new run carries ``reprorun.rerunOf``."""
    from reprorun.projects.launch import run_request
    from reprorun.tracking.store import open_store

    store = open_store(tracking_uri)
    original = store.get_run(store.resolve_run_id(run_id))
    spec = rerun_spec(original, parameters)
    for warning in spec.warnings:
        if on_warning:
            on_warning(warning)
    request = spec.request(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=tracking_uri,
        synchronous=synchronous,
    )
    return run_request(
        request, echo=echo, on_submit=on_submit, on_warning=on_warning, progress=progress
    )


VERIFY_TAG = "reprorun.verify"


@dataclass(frozen=True)
class MetricCheck:
    key: str
    original: float | None
    rerun: float | None
    reproduced: bool

    @property
    def difference(self) -> float | None:
        if self.original is None or self.rerun is None:
            return None
        return self.rerun - self.original


@dataclass(frozen=True)
class Verification:
    """Whether a rerun reproduced its original: every final metric equal within tolerance."""

    original: str
    rerun: str
    tolerance: float
    metrics: tuple[MetricCheck, ...]
    fingerprint_differences: tuple[str, ...]  # what differs in what the two runs ran

    @property
    def reproduced(self) -> bool:
        return bool(self.metrics) and all(m.reproduced for m in self.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "rerun": self.rerun,
            "reproduced": self.reproduced,
            "tolerance": self.tolerance,
            "metrics": [
                {
                    "key": m.key,
                    "original": _json_number(m.original),
                    "rerun": _json_number(m.rerun),
                    "reproduced": m.reproduced,
                }
                for m in self.metrics
            ],
            "fingerprint_differences": list(self.fingerprint_differences),
        }


def _json_number(value: float | None) -> float | str | None:
    import math

    return value if value is None or math.isfinite(value) else str(value)


def close_enough(a: float, b: float, tolerance: float) -> bool:
    """``|a - b| <= tolerance * max(1, |a|)``: absolute near zero, relative for large values;
    NaN matches NaN (a metric that was NaN and is NaN again reproduced)."""
    import math

    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tolerance * max(1.0, abs(a))


def verify(store: Any, original_id: str, rerun_id: str, tolerance: float) -> Verification:
    """Compare the final metrics of ``rerun_id`` with ``original_id``'s; tag both runs with
    the result (``reprorun.verify``, JSON)."""
    from reprorun.projects.fingerprint import PARTS_TAG, differences

    original, again = store.get_run(original_id), store.get_run(rerun_id)
    # The original's metrics decide; one the rerun adds (a new timing, say) cannot be wrong.
    keys = sorted(original.data.metrics)
    checks = []
    for key in keys:
        a, b = original.data.metrics.get(key), again.data.metrics.get(key)
        same = a is not None and b is not None and close_enough(a, b, tolerance)
        checks.append(MetricCheck(key, a, b, same))
    parts = [run.data.tags.get(PARTS_TAG) for run in (original, again)]
    changed = tuple(differences(json.loads(parts[0]), json.loads(parts[1]))) if all(parts) else ()
    result = Verification(original_id, rerun_id, tolerance, tuple(checks), changed)
    text = json.dumps(result.to_dict())
    store.set_tag(original_id, VERIFY_TAG, text)
    store.set_tag(rerun_id, VERIFY_TAG, text)
    return result
