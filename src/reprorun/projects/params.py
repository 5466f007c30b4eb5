"""Parameter types, casting, validation and shell-safe rendering.

Pure functions over plain data: nothing here touches the store or runs anything. The only
I/O is the existence check of ``path`` parameters, which MLflow Projects does too (a ``path``
given an http(s)://, s3:// or gs:// URL is checked as a URL here and downloaded by the runner,
see ``reprorun.projects.downloads``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reprorun.errors import ParameterError, ParamProblem, UserInputError
from reprorun.params import (
    CastError,
    ParamType,
    ParamValue,
    cast_value,
    format_value,
    names_one_place,
    passed_text,
)


@dataclass(frozen=True)
class Parameter:
    """One declared parameter of an entry point."""

    name: str
    type: ParamType = ParamType.STRING
    default: str | None = None  # raw text; None means required
    choices: tuple[ParamValue, ...] | None = None
    min: float | None = None
    max: float | None = None
    help: str | None = None
    line: int | None = None

    @property
    def required(self) -> bool:
        return self.default is None

    def describe_type(self) -> str:
        text = self.type.value
        if self.choices is not None:
            text += " in {" + ", ".join(format_value(c) for c in self.choices) + "}"
        if self.min is not None or self.max is not None:
            low = "" if self.min is None else format_value(self.min)
            high = "" if self.max is None else format_value(self.max)
            text += f" in [{low}, {high}]"
        return text

    def check(self, raw: str, *, base_dir: Path) -> ParamValue:
        """Cast and check bounds and choices; raises CastError naming what was expected."""
        value = cast_value(self.type, raw, base_dir=base_dir)
        if self.choices is not None and value not in self.choices:
            raise CastError(
                f"one of {', '.join(format_value(c) for c in self.choices)} ({self.type.value})"
            )
        if isinstance(value, (int, float)):
            if self.min is not None and value < self.min:
                raise CastError(f"{self.describe_type()} (at least {format_value(self.min)})")
            if self.max is not None and value > self.max:
                raise CastError(f"{self.describe_type()} (at most {format_value(self.max)})")
        return value


Source = Literal["cli", "default", "extra"]


@dataclass(frozen=True)
class ResolvedParam:
    """A parameter's final value and where it came from."""

    name: str
    value: ParamValue
    text: str
    source: Source
    declared: bool
    # What the command receives when it is not ``text``: a downloaded path's local copy.
    command_text: str | None = None

    @property
    def passed(self) -> str:
        return self.text if self.command_text is None else self.command_text


def parse_param_args(args: Sequence[str]) -> dict[str, str]:
    """Parse ``KEY=VALUE`` strings (the -P options). The value may itself contain '='."""
    params: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserInputError(
                f"Invalid parameter {arg!r}: expected KEY=VALUE, e.g. -P max_depth=3."
            )
        if key in params and params[key] != value:
            raise UserInputError(
                f"Parameter {key!r} given twice with different values: "
                f"{params[key]!r} and {value!r}."
            )
        params[key] = value
    return params


def resolve_parameters(
    declared: Mapping[str, Parameter],
    given: Mapping[str, str],
    *,
    cwd: Path,
    project_dir: Path,
    entry_point: str | None = None,
) -> list[ResolvedParam]:
    """Cast every parameter; raise one ParameterError listing every problem.

    Values given on the command line resolve relative paths against ``cwd`` (where the user
    typed them); defaults resolve against ``project_dir`` (where the author wrote them).
    Undeclared values are passed through as strings, as MLflow does.
    """
    problems: list[ParamProblem] = []
    resolved: list[ResolvedParam] = []
    for name, param in declared.items():
        source: Source
        if name in given and "\x00" in given[name]:
            continue  # reported below with the undeclared ones
        if name in given:
            raw, source, base = given[name], "cli", cwd
        elif param.default is not None:
            raw, source, base = param.default, "default", project_dir
        else:
            problems.append(ParamProblem(name, param.describe_type(), None))
            continue
        try:
            value = param.check(raw, base_dir=base)
        except CastError as exc:
            given_text = raw if source == "cli" else f"{raw} (the default)"
            problems.append(ParamProblem(name, exc.expected, given_text))
            continue
        text = passed_text(param.type, raw, value)
        if param.type is ParamType.PATH and text != raw and names_one_place(raw):
            # As MLflow: the run records the location as given (file:///data, /data/../x),
            # the command receives the checked local path.
            resolved.append(ResolvedParam(name, value, raw, source, True, command_text=text))
        else:
            resolved.append(ResolvedParam(name, value, text, source, True))
    for name, raw in given.items():
        if "\x00" in raw or "\x00" in name:
            problems.append(ParamProblem(name, "text without NUL characters", raw))
        elif name not in declared:
            resolved.append(ResolvedParam(name, raw, raw, "extra", False))
    if problems:
        raise ParameterError(problems, entry_point)
    return resolved


# A placeholder is {name} not preceded by '$' (so shell ${VAR} stays shell syntax).
_PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|(?<!\$)\{([^{}\s.\[\]!:'\"$]+)\}")
# {name:spec} and {name!r}: str.format features MLflow templates could use; refused at load.
FORMAT_SPEC_RE = re.compile(r"(?<!\$)\{([A-Za-z_][\w-]*)[:!][^{}]*\}")


# Every brace, read as str.format reads it: {{ and }} literal, {name} a placeholder, else single.
_BRACE_RE = re.compile(_PLACEHOLDER_RE.pattern + r"|[{}]")


def unbalanced_brace(template: str) -> int | None:
    """Where the template has a brace that MLflow's ``str.format`` refuses: a single '{' never
    closed or a single '}' never opened (the first such). None when every brace pairs up;
    balanced groups that are not placeholders (shell ``${VAR}``, ``{1..3}``, awk's
    ``{print $1}``) stay literal text."""
    opened: list[int] = []
    for match in _BRACE_RE.finditer(template):
        brace = match.group(0)
        if brace == "{":
            opened.append(match.start())
        elif brace == "}":
            if not opened:
                return match.start()
            opened.pop()
    return opened[0] if opened else None


def placeholders(template: str) -> list[str]:
    """The parameter names a command template refers to, in order of appearance."""
    return [m.group(1) for m in _PLACEHOLDER_RE.finditer(template) if m.group(1)]


def _quote_state(text: str, state: str) -> str:
    """The shell quoting state ('', "'" or '"') after ``text``, starting in ``state``."""
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif state == "'":
            if char == "'":
                state = ""
        elif char == "\\":
            escaped = True
        elif state == '"':
            if char == '"':
                state = ""
        elif char in "'\"":
            state = char
    return state


def render_command(template: str, params: Sequence[ResolvedParam]) -> str:
    """Fill the template with shell-quoted values and append undeclared ones as --key value.

    The template is shell syntax by contract; every substituted value is quoted, so no
    parameter value can become shell code, even where the template puts the placeholder
    inside quotes (``'{x}'`` or ``"--msg={x}"``): there the surrounding quote is closed, the
    quoted value inserted, and the quote reopened. ``{{`` and ``}}`` are literal braces, as in
    ``str.format`` (what MLflow uses).
    """
    values = {p.name: p.passed for p in params if p.declared}
    parts: list[str] = []
    state, position = "", 0
    for match in _PLACEHOLDER_RE.finditer(template):
        literal = template[position : match.start()]
        state = _quote_state(literal, state)
        parts.append(literal)
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        else:
            parts.append(state + shlex.quote(values[match.group(1)]) + state)
        position = match.end()
    parts.append(template[position:])
    command = "".join(parts)
    extras = [
        f"{shlex.quote('--' + p.name)} {shlex.quote(p.passed)}" for p in params if not p.declared
    ]
    return " ".join([command, *extras])
