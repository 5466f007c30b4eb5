"""Creating a sweep: every point checked, the code pinned, the parent run and the state
written."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprorun.errors import ParameterError, ParamProblem, UserInputError
from reprorun.projects.sweep.pinning import pin_code
from reprorun.projects.sweep.state import (
    FORMAT,
    TAG_ID,
    TAG_POINTS,
    TAG_SPEC,
    file_lock,
    now_ms,
    save_state,
    state_path,
    sweep_dir,
)


@dataclass
class Sweep:
    """A sweep as created: its id, parent run and points (see ``sweep_status`` for more)."""

    sweep_id: str
    parent_run_id: str
    points: list[dict[str, str]]
    state_path: Path
    code: dict[str, Any] = field(default_factory=dict)


def create_sweep(
    uri: str,
    params: list[str],
    *,
    entry_point: str = "main",
    version: str | None = None,
    experiment_name: str | None = None,
    env_manager: str | None = None,
    backend: str = "local",
    backend_config: str | None = None,
    random_count: int | None = None,
    seed: int | None = None,
    max_parallel: int = 1,
    reuse: bool = False,
    metric: str | None = None,
    goal: str = "max",
    tracking_uri: str | None = None,
    cwd: Path | None = None,
    dry_run: bool = False,
    retry: Mapping[str, Any] | None = None,
) -> Sweep:
    """Validate every point, pin the code, create the parent run and write the state.

    Everything that can be wrong with the input (an expression that does not parse, a value
    outside a parameter's type, choices or range, an unknown entry point, backend or env
    manager) raises before anything is recorded. With ``dry_run`` nothing is recorded at all:
    the returned Sweep has an empty id and parent run. ``retry`` holds each point's retry
    policy as ``RunRequest`` fields (``retries``, ``retry_on``, ``retry_memory``,
    ``retry_backoff``): a point's attempts are runs of their own, as for ``reprorun run``.
    """
    from reprorun.backends.registry import get_backend
    from reprorun.envs.registry import get_env_manager
    from reprorun.projects.params import resolve_parameters
    from reprorun.projects.request import load_backend_config
    from reprorun.projects.spec import load_project
    from reprorun.projects.sweep.grammar import expand as expand_points
    from reprorun.projects.sweep.grammar import parse_sweep_arg
    from reprorun.sources import resolve_source

    cwd = (cwd or Path.cwd()).resolve()
    if max_parallel < 1:
        raise UserInputError(f"--max-parallel must be at least 1, got {max_parallel}.")
    retry = _check_retry(retry or {})
    if goal not in ("max", "min"):
        raise UserInputError(f"--goal must be max or min, got {goal!r}.")
    if not params:
        raise UserInputError("A sweep needs at least one -P NAME=EXPRESSION.")
    parsed = [parse_sweep_arg(arg) for arg in params]
    points = expand_points(parsed, random_count=random_count, seed=seed)
    if backend_config is not None:
        backend_config = str((cwd / backend_config).resolve())
    get_backend(backend, *load_backend_config(backend_config))
    if env_manager is not None:
        get_env_manager(env_manager)

    source = resolve_source(uri, version=version, cwd=cwd)
    project = load_project(source.directory)
    ep = project.entry_point(entry_point)
    _check_values(ep.parameters, points, cwd, ep.name)
    # The first point as `reprorun run` would resolve it: required parameters, NUL bytes...
    resolve_parameters(
        ep.parameters, points[0], cwd=cwd, project_dir=project.directory, entry_point=ep.name
    )
    code = pin_code(source)
    if dry_run:
        return Sweep("", "", points, Path(), code)

    from reprorun.config import resolve_tracking
    from reprorun.tracking.store import open_store

    target = resolve_tracking(tracking_uri)
    store = open_store(target.uri)
    from reprorun.projects.request import default_experiment_name

    experiment_id = store.get_or_create_experiment(experiment_name or default_experiment_name())
    sweep_id = _new_id()
    folder = sweep_dir(sweep_id)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = code.pop("manifest", None)
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    spec = {
        "uri": uri,
        "cwd": str(cwd),
        "entry_point": ep.name,
        "version": version,
        "params": list(params),
        "random": random_count,
        "seed": seed,
        "max_parallel": max_parallel,
        "reuse": reuse,
        "metric": metric,
        "goal": goal,
        "experiment_id": experiment_id,
        "env_manager": env_manager,
        "backend": backend,
        "backend_config": backend_config,
        "tracking_uri": target.uri,
        "retry": retry,
    }
    parent = store.create_run(
        experiment_id,
        run_name=f"sweep-{sweep_id}",
        user_id=_user(),
        tags=_parent_tags(sweep_id, spec, code, len(points)),
    )
    state: dict[str, Any] = {
        "format": FORMAT,
        "id": sweep_id,
        "created": now_ms(),
        "updated": now_ms(),
        "spec": spec,
        "parent_run_id": parent.info.run_id,
        "code": code,
        "code_changes": [],
        "driver": None,
        "cancelled": False,
        "points": [
            {
                "index": i,
                "params": point,
                "status": "pending",
                "run_id": None,
                "reused": False,
                "exit_code": None,
                "attempts": [],
                "pid": None,
                "host": None,
                "started": None,
                "ended": None,
            }
            for i, point in enumerate(points, start=1)
        ],
    }
    with file_lock(folder / "state.lock"):
        save_state(state)
    return Sweep(sweep_id, parent.info.run_id, points, state_path(sweep_id), code)


def _check_retry(retry: Mapping[str, Any]) -> dict[str, Any]:
    """The retry fields, checked as a run's are (only those a request has)."""
    from reprorun.projects.request import RunRequest
    from reprorun.projects.retry import RetryPolicy

    fields = ("retries", "retry_on", "retry_memory", "retry_backoff")
    given = {k: v for k, v in retry.items() if k in fields and v is not None}
    policy = RetryPolicy.of(RunRequest(".", **given))
    if not policy.retries:
        return {}
    on = given.get("retry_on")
    return {**given, **({"retry_on": [r.value for r in policy.on]} if on else {})}


def _new_id() -> str:
    while True:
        sweep_id = "sw-" + secrets.token_hex(5)
        if not state_path(sweep_id).exists():
            return sweep_id


def _user() -> str:
    from reprorun._utils import current_user

    return current_user()


def _check_values(
    declared: Mapping[str, Any], points: list[dict[str, str]], cwd: Path, entry_point: str
) -> None:
    """Every distinct value of every declared parameter, checked as `reprorun run` would;
    one error lists every bad value. Undeclared parameters pass through, as in a run."""
    from reprorun.params import CastError

    problems: list[ParamProblem] = []
    seen: set[tuple[str, str]] = set()
    for point in points:
        for name, raw in point.items():
            if (name, raw) in seen:
                continue
            seen.add((name, raw))
            param = declared.get(name)
            if param is None:
                continue
            try:
                param.check(raw, base_dir=cwd)
            except CastError as exc:
                problems.append(ParamProblem(name, exc.expected, raw))
    if problems:
        shown, more = problems[:20], len(problems) - 20
        if more > 0:
            shown.append(ParamProblem("...", f"{more} more bad values", None))
        raise ParameterError(shown, entry_point)


def _parent_tags(
    sweep_id: str, spec: Mapping[str, Any], code: Mapping[str, Any], count: int
) -> dict[str, str]:
    from reprorun.tracking.entities import SystemTags

    described = {k: spec[k] for k in ("params", "random", "seed", "metric", "goal", "reuse")}
    tags = {
        TAG_ID: sweep_id,
        TAG_POINTS: str(count),
        TAG_SPEC: json.dumps(described),
        SystemTags.SOURCE_TYPE: "PROJECT",
        SystemTags.SOURCE_NAME: str(code["source_name"]),
        SystemTags.SOURCE_KIND: str(code["kind"]),
        SystemTags.ENTRY_POINT: str(spec["entry_point"]),
    }
    if code.get("commit"):
        tags[SystemTags.GIT_COMMIT] = str(code["commit"])
    return tags
