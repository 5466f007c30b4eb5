"""The MLproject model: parsed once, validated with file and line, frozen, no I/O after load.

Compatible with MLflow Projects: the file is found whatever its case; ``name``,
``entry_points`` (``parameters`` and ``command``), and one of ``python_env``, ``conda_env``,
``docker_env``. Beyond MLflow (extra keys MLflow ignores): a parameter may declare
``choices``, ``min``, ``max`` and ``help``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reprorun._yaml import LineDict, line_of, load_yaml
from reprorun.envs.declared import DockerEnv, EnvSpec
from reprorun.errors import EntryPointNotFound, SpecError
from reprorun.params import CastError, ParamType, ParamValue, cast_value
from reprorun.projects.params import FORMAT_SPEC_RE, Parameter, placeholders, unbalanced_brace

MLPROJECT_FILE_NAME = "mlproject"
ENV_KEYS = ("python_env", "conda_env", "docker_env")
# Files MLflow picks up as the environment when the MLproject names none.
DEFAULT_ENV_FILES = {"python_env": "python_env.yaml", "conda_env": "conda.yaml"}
SCRIPT_RUNNERS = {".py": "python", ".sh": "bash", ".R": "Rscript"}

_PARAM_KEYS = {"type", "default", "choices", "min", "max", "help"}
_TYPE_ALIASES = {
    **{t.value: t for t in ParamType},
    "str": ParamType.STRING,
    "integer": ParamType.INT,
    "double": ParamType.FLOAT,
    "number": ParamType.FLOAT,
}
_ENTRY_POINT_KEYS = {"parameters", "command"}


@dataclass(frozen=True)
class EntryPoint:
    name: str
    command: str
    parameters: Mapping[str, Parameter] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True)
class Project:
    directory: Path
    name: str | None = None
    entry_points: Mapping[str, EntryPoint] = field(default_factory=dict)
    env: EnvSpec = field(default_factory=EnvSpec)
    spec_path: Path | None = None  # None: a directory without an MLproject
    warnings: tuple[str, ...] = ()  # what was accepted but ignored (MLflow ignores it too)

    def entry_point(self, name: str) -> EntryPoint:
        """The named entry point, or a script file run by its interpreter (as MLflow does)."""
        if name in self.entry_points:
            return self.entry_points[name]
        suffix = Path(name).suffix
        runner = SCRIPT_RUNNERS.get(suffix)
        if runner is not None:
            script = (self.directory / name).resolve()
            if script.is_file() and script.is_relative_to(self.directory):
                # A template: braces in the file name are literal ({{ and }}).
                quoted = shlex.quote(name).replace("{", "{{").replace("}", "}}")
                return EntryPoint(name=name, command=f"{runner} {quoted}")
        where = str(self.spec_path) if self.spec_path else f"{self.directory} (no MLproject)"
        raise EntryPointNotFound(
            name, sorted(self.entry_points) + _scripts_in(self.directory), where=where
        )


def _scripts_in(directory: Path) -> list[str]:
    try:
        return sorted(
            p.name for p in directory.iterdir() if p.suffix in SCRIPT_RUNNERS and p.is_file()
        )
    except OSError:
        return []


def find_mlproject(directory: Path) -> Path | None:
    """The MLproject file of ``directory``, matched case-insensitively as MLflow does."""
    for entry in sorted(directory.iterdir()):
        if entry.name.lower() == MLPROJECT_FILE_NAME and entry.is_file():
            return entry
    return None


# --- loading --------------------------------------------------------------------------------


def load_project(directory: Path | str) -> Project:
    """Load the project in ``directory``: its MLproject if there is one, else a bare project."""
    directory = Path(directory).resolve()
    spec_path = find_mlproject(directory)
    if spec_path is None:
        return Project(directory=directory, env=_default_env(directory))
    try:
        text = spec_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not valid UTF-8 text ({exc.reason})", spec_path) from exc
    return parse_project(text, directory=directory, spec_path=spec_path)


def parse_project(text: str, *, directory: Path, spec_path: Path) -> Project:
    """Parse MLproject ``text``; every error names ``spec_path`` and the line."""
    doc = load_yaml(text, spec_path)
    if doc is None or doc == {}:
        raise SpecError(
            "MLproject is empty: declare the project's entry points, e.g.\n"
            "  entry_points:\n"
            "    main:\n"
            '      command: "python train.py"\n'
            "(or delete the file to run a script directly: reprorun run . -e train.py)",
            spec_path,
            1,
        )
    if not isinstance(doc, dict):
        raise SpecError(
            f"expected a mapping at the top level (name, entry_points, ...), got {_kind(doc)}",
            spec_path,
            1,
        )
    ctx = _Ctx(spec_path, directory)
    name = doc.get("name")
    if name is not None and not isinstance(name, (str, int, float)):
        raise ctx.error(f"'name' must be a string, got {_kind(name)}", doc, "name")
    entry_points = ctx.entry_points(doc)
    env = ctx.env(doc)
    return Project(
        directory=directory,
        name=None if name is None else str(name),
        entry_points=entry_points,
        env=env,
        spec_path=spec_path,
        warnings=tuple(ctx.warnings),
    )


def _brace_problem(command: str, index: int) -> str:
    """Point at the unbalanced brace at ``index``: the command's line with a caret under it."""
    start = command.rfind("\n", 0, index) + 1
    end = command.find("\n", index)
    text = command[start : end if end >= 0 else len(command)]
    column = index - start + 1
    line = command.count("\n", 0, index) + 1
    at = f"line {line}, column {column}" if "\n" in command.rstrip("\n") else f"column {column}"
    caret = "".join(c if c == "\t" else " " for c in text[: column - 1]) + "^"
    return (
        f"the command has an unbalanced {command[index]!r} at {at} of the command:\n"
        f"    {text}\n    {caret}\n"
        "Every { must close with a }: write {{ and }} for a literal brace (as MLflow, which "
        "fills the command with Python's str.format, requires)."
    )


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    return f"{type(value).__name__} {value!r}"


def _scalar_text(value: Any) -> str | None:
    """The text of a YAML scalar default, as the user would write it on the command line."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _default_env(directory: Path) -> EnvSpec:
    for kind, filename in DEFAULT_ENV_FILES.items():
        candidate = directory / filename
        if candidate.is_file():
            return EnvSpec(kind=kind, path=candidate)
    return EnvSpec()


@dataclass
class _Ctx:
    path: Path
    directory: Path
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str, mapping: Any, key: Any) -> None:
        line = line_of(mapping, key)
        self.warnings.append(
            f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}"
        )

    def error(self, message: str, mapping: Any = None, key: Any = None) -> SpecError:
        line = line_of(mapping, key) if mapping is not None else None
        return SpecError(message, self.path, line)

    def entry_points(self, doc: dict[str, Any]) -> dict[str, EntryPoint]:
        raw = doc.get("entry_points")
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.error(
                f"'entry_points' must be a mapping of names to entry points, got {_kind(raw)}",
                doc,
                "entry_points",
            )
        result: dict[str, EntryPoint] = {}
        for ep_name, body in raw.items():
            ep_name = str(ep_name)
            result[ep_name] = self.entry_point(ep_name, body, raw)
        return result

    def entry_point(self, name: str, body: Any, parent: Any) -> EntryPoint:
        where = f"entry point {name!r}"
        if not isinstance(body, dict):
            raise self.error(
                f"{where} must be a mapping with 'command' (and optional 'parameters'), "
                f"got {_kind(body)}",
                parent,
                name,
            )
        for key in sorted(set(body) - _ENTRY_POINT_KEYS, key=str):
            self.warn(
                f"{where}: ignoring unknown key {key!r} (known: command, parameters)", body, key
            )
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            raise self.error(
                f"{where}: 'command' must be a non-empty string, got {_kind(command)}",
                body,
                "command" if "command" in body else None,
            )
        params_raw = body.get("parameters") or {}
        if not isinstance(params_raw, dict):
            raise self.error(
                f"{where}: 'parameters' must be a mapping, got {_kind(params_raw)}",
                body,
                "parameters",
            )
        params = {
            str(pname): self.parameter(where, str(pname), spec, params_raw)
            for pname, spec in params_raw.items()
        }
        spec_match = FORMAT_SPEC_RE.search(command)
        if spec_match:
            raise self.error(
                f"{where}: the command uses {spec_match.group(0)}; format specs and conversions "
                f"are not supported, write {{{spec_match.group(1)}}}",
                body,
                "command",
            )
        brace = unbalanced_brace(command)
        if brace is not None:
            raise self.error(f"{where}: {_brace_problem(command, brace)}", body, "command")
        for placeholder in placeholders(command):
            if placeholder not in params:
                declared = ", ".join(params) or "none"
                raise self.error(
                    f"{where}: the command uses {{{placeholder}}} but no such parameter is "
                    f"declared (declared: {declared}); write {{{{ and }}}} for literal braces",
                    body,
                    "command",
                )
        return EntryPoint(name=name, command=command, parameters=params, line=line_of(parent, name))

    def parameter(self, where: str, name: str, spec: Any, parent: Any) -> Parameter:
        line = line_of(parent, name)
        here = f"{where}, parameter {name!r}"
        # MLflow allows the short form `alpha: float` (a type and no default).
        if isinstance(spec, str) or spec is None:
            short = LineDict({"type": spec} if spec is not None else {})
            short.line, short.key_lines = line or 1, {"type": line or 1}
            spec = short
        if not isinstance(spec, dict):
            raise SpecError(
                f"{here}: expected a type name or a mapping with type/default, got {_kind(spec)}",
                self.path,
                line,
            )
        for key in sorted(set(spec) - _PARAM_KEYS, key=str):
            known = ", ".join(sorted(_PARAM_KEYS))
            self.warn(f"{here}: ignoring unknown key {key!r} (known: {known})", spec, key)
        type_name = spec.get("type", "string")
        if not isinstance(type_name, str):
            raise self.error(
                f"{here}: 'type' must be a type name, got {_kind(type_name)}", spec, "type"
            )
        ptype = _TYPE_ALIASES.get(type_name.lower())
        if ptype is None:
            # MLflow passes values of types it does not know through unchecked: so do we.
            valid = ", ".join(t.value for t in ParamType)
            self.warn(
                f"{here}: unknown type {type_name!r} treated as string (types: {valid})",
                spec,
                "type",
            )
            ptype = ParamType.STRING
        default = _scalar_text(spec.get("default"))
        if "default" in spec and spec["default"] is not None and default is None:
            raise self.error(
                f"{here}: the default must be a single value, got {_kind(spec['default'])}",
                spec,
                "default",
            )
        help_text = spec.get("help")
        if help_text is not None and not isinstance(help_text, str):
            raise self.error(f"{here}: 'help' must be a string", spec, "help")
        numeric = ptype in (ParamType.FLOAT, ParamType.INT)
        bounds: dict[str, float | None] = {}
        for bound in ("min", "max"):
            value = spec.get(bound)
            if value is None:
                bounds[bound] = None
                continue
            if not numeric:
                raise self.error(
                    f"{here}: '{bound}' applies only to float and int parameters", spec, bound
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.error(
                    f"{here}: '{bound}' must be a number, got {_kind(value)}", spec, bound
                )
            bounds[bound] = value
        choices = self.choices(here, ptype, spec)
        param = Parameter(
            name=name,
            type=ptype,
            default=default,
            choices=choices,
            min=bounds["min"],
            max=bounds["max"],
            help=help_text,
            line=line,
        )
        # Check the default now (paths are checked at run time: they may be created later).
        if default is not None and ptype is not ParamType.PATH:
            try:
                param.check(default, base_dir=self.directory)
            except CastError as exc:
                raise self.error(
                    f"{here}: the default {default!r} is not {exc.expected}", spec, "default"
                ) from None
        return param

    def choices(
        self, here: str, ptype: ParamType, spec: dict[str, Any]
    ) -> tuple[ParamValue, ...] | None:
        raw = spec.get("choices")
        if raw is None:
            return None
        if not isinstance(raw, list) or not raw:
            raise self.error(f"{here}: 'choices' must be a non-empty list", spec, "choices")
        result: list[ParamValue] = []
        for item in raw:
            text = _scalar_text(item)
            try:
                if text is None:
                    raise CastError("a single value")
                result.append(cast_value(ptype, text, base_dir=self.directory))
            except CastError as exc:
                raise self.error(
                    f"{here}: choice {item!r} is not {exc.expected}", spec, "choices"
                ) from None
        return tuple(result)

    def env(self, doc: dict[str, Any]) -> EnvSpec:
        present = [k for k in ENV_KEYS if doc.get(k) is not None]
        if len(present) > 1:
            raise self.error(
                f"a project may declare only one environment, found: {', '.join(present)}",
                doc,
                present[1],
            )
        if not present:
            return _default_env(self.directory)
        kind = present[0]
        value = doc[kind]
        if kind == "docker_env":
            return EnvSpec(kind=kind, docker=self.docker(value, doc))
        if not isinstance(value, str) or not value:
            raise self.error(f"'{kind}' must be a file path, got {_kind(value)}", doc, kind)
        env_path = (self.directory / value).resolve()
        if not env_path.is_file():
            raise self.error(
                f"'{kind}' names {value}, but no such file exists ({env_path})", doc, kind
            )
        return EnvSpec(kind=kind, path=env_path)

    def docker(self, value: Any, doc: dict[str, Any]) -> DockerEnv:
        if not isinstance(value, dict):
            raise self.error(
                f"'docker_env' must be a mapping with 'image', got {_kind(value)}",
                doc,
                "docker_env",
            )
        image = value.get("image")
        if not isinstance(image, str) or not image:
            raise self.error("'docker_env' needs an 'image' (a string)", value, "image")
        volumes = value.get("volumes") or []
        if not isinstance(volumes, list) or not all(isinstance(v, str) for v in volumes):
            raise self.error(
                "docker_env 'volumes' must be a list of strings, e.g. [\"/data:/data\"]",
                value,
                "volumes",
            )
        env_raw = value.get("environment") or []
        environment: list[tuple[str, str | None]] = []
        ok = isinstance(env_raw, list)
        for item in env_raw if ok else []:
            if isinstance(item, str):
                environment.append((item, None))
            elif (
                isinstance(item, list)
                and len(item) == 2
                and all(isinstance(i, (str, int, float)) for i in item)
            ):
                environment.append((str(item[0]), str(item[1])))
            else:
                ok = False
        if not ok:
            raise self.error(
                "docker_env 'environment' must be a list of names (copied from the host) or "
                '[NAME, value] pairs, e.g. [["NEW_VAR", "value"], "VAR_FROM_HOST"]',
                value,
                "environment",
            )
        return DockerEnv(image=image, volumes=tuple(volumes), environment=tuple(environment))
