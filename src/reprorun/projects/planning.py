"""Plan a run: resolve and validate everything about it, with no side effect.

``plan(request)`` fetches the source (into the source cache, which is nothing of the user's),
loads its MLproject, casts the parameters and renders the command. Everything that can be wrong
with the input fails here, so bad input never leaves a run behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprorun._utils import process_identity
from reprorun.projects.params import ResolvedParam, render_command, resolve_parameters
from reprorun.projects.request import DEFAULT_ENTRY_POINT, RunRequest
from reprorun.projects.spec import EntryPoint, Project, load_project
from reprorun.sources import Provenance, resolve_source
from reprorun.tracking.entities import SystemTags


@dataclass(frozen=True)
class RunPlan:
    """A fully validated run, ready to execute: the output of ``--dry-run``."""

    project: Project
    entry_point: EntryPoint
    params: list[ResolvedParam]
    command: str
    provenance: Provenance
    snapshot: Path | None = None  # an immutable source tree: runs get a working copy

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": {
                "name": self.project.name,
                "directory": str(self.project.directory),
                "mlproject": str(self.project.spec_path) if self.project.spec_path else None,
                "env": self.project.env.kind,
            },
            "entry_point": self.entry_point.name,
            "parameters": {
                p.name: {"value": p.value, "text": p.text, "source": p.source} for p in self.params
            },
            "command": self.command,
            "cwd": str(self.project.directory),
            "warnings": list(self.project.warnings),
            "source": {
                "kind": self.provenance.source_kind,
                "name": self.provenance.source_name,
                "version": self.provenance.version,
                "git_commit": self.provenance.git_commit,
                "git_repo_url": self.provenance.git_repo_url,
                "git_branch": self.provenance.git_branch,
                "git_dirty": self.provenance.git_dirty,
                "subdirectory": self.provenance.subdirectory,
            },
        }


def plan(request: RunRequest, *, cwd: Path | None = None) -> RunPlan:
    """Resolve and validate everything about ``request`` without running or recording
    anything (a git or archive source is fetched into the source cache, which is not a side
    effect on anything of the user's). Relative paths are read from ``cwd`` (default: the
    current directory)."""
    cwd = cwd or Path.cwd()
    source = resolve_source(
        request.uri, version=request.version, cwd=cwd, archive_sha256=request.archive_sha256
    )
    project = load_project(source.directory)
    ep = project.entry_point(request.entry_point)
    given = {str(k): _param_text(v) for k, v in request.parameters.items()}
    resolved = resolve_parameters(
        ep.parameters, given, cwd=cwd, project_dir=project.directory, entry_point=ep.name
    )
    command = render_command(ep.command, resolved)
    return RunPlan(project, ep, resolved, command, source.provenance, source.snapshot)


def plan_uri(
    uri: str,
    entry_point: str = DEFAULT_ENTRY_POINT,
    parameters: Mapping[str, Any] | None = None,
    *,
    version: str | None = None,
    cwd: Path | None = None,
    archive_sha256: str | None = None,
) -> RunPlan:
    """Resolve and validate everything about a run without running or recording anything
    (a git or archive source is fetched into the source cache, which is not a side effect on
    anything of the user's): ``reprorun.projects.plan``, the Python API's form of ``plan``."""
    request = RunRequest(
        uri, entry_point, parameters or {}, version=version, archive_sha256=archive_sha256
    )
    return plan(request, cwd=cwd)


def download_path_params(the_plan: RunPlan, progress: Callable[[str], None] | None) -> RunPlan:
    """The plan with each ``path`` parameter given a URL downloaded (as MLflow does): the
    command gets the local copy, the run records the URL."""
    from reprorun.projects.downloads import download_path_params as download

    params = download(the_plan.params, the_plan.entry_point.parameters, progress)
    if params == the_plan.params:
        return the_plan
    command = render_command(the_plan.entry_point.command, params)
    return dataclasses.replace(the_plan, params=params, command=command)


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def system_tags(the_plan: RunPlan, env_name: str, backend_name: str) -> dict[str, str]:
    from reprorun import __version__

    prov = the_plan.provenance
    tags = {
        SystemTags.SOURCE_TYPE: prov.source_type,
        SystemTags.SOURCE_NAME: prov.source_name,
        SystemTags.ENTRY_POINT: the_plan.entry_point.name,
        SystemTags.ENV: env_name,
        SystemTags.BACKEND: backend_name,
        SystemTags.COMMAND: the_plan.command,
        SystemTags.VERSION: __version__,
        SystemTags.PROJECT_DIR: str(the_plan.project.directory),
        SystemTags.LOG_ARTIFACT: "logs/run.log",
    }
    if prov.git_commit:
        tags[SystemTags.GIT_COMMIT] = prov.git_commit
    if prov.git_repo_url:
        tags[SystemTags.GIT_REPO_URL] = prov.git_repo_url
        tags[SystemTags.LEGACY_GIT_REPO_URL] = prov.git_repo_url
    if prov.git_branch:
        tags[SystemTags.GIT_BRANCH] = prov.git_branch
        tags[SystemTags.LEGACY_GIT_BRANCH] = prov.git_branch
    if prov.git_dirty is not None:
        tags[SystemTags.GIT_DIRTY] = str(prov.git_dirty).lower()
    tags[SystemTags.SOURCE_KIND] = prov.source_kind
    tags[SystemTags.SUPERVISOR] = process_identity(os.getpid())
    tags[SystemTags.RUN_PARAMS] = json.dumps({p.name: p.text for p in the_plan.params})
    optional = {
        SystemTags.SOURCE_VERSION: prov.version,
        SystemTags.SOURCE_SUBDIRECTORY: prov.subdirectory,
        SystemTags.SOURCE_URI: prov.uri,
        SystemTags.SOURCE_ARCHIVE_SHA256: prov.archive_sha256,
        SystemTags.SOURCE_REF_CHECK: prov.ref_check,
        SystemTags.SOURCE_REF_CHECK_WARNING: prov.ref_check_warning,
    }
    tags.update({k: v for k, v in optional.items() if v})
    return tags


def plan_warnings(the_plan: RunPlan, env_manager: str) -> list[str]:
    """What the plan accepts but is worth knowing (ignored MLproject keys, an unchecked tag,
    a declared environment the local manager does not build)."""
    warnings = list(the_plan.project.warnings)
    if the_plan.provenance.ref_check_warning:  # a cached tag used unchecked
        warnings.append(the_plan.provenance.ref_check_warning)
    declared_env = the_plan.project.env
    if declared_env.kind and env_manager == "local":
        what = declared_env.path.name if declared_env.path else declared_env.kind
        warnings.append(
            f"the project declares {declared_env.kind} ({what}); this run uses your own "
            "python (the activated environment's, or PATH's) and its packages (--env-manager local)"
        )
    return warnings
