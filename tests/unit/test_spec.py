"""Unit tests for reprorun.projects.spec: loading and validating MLproject files."""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reprorun.envs.declared import DockerEnv
from reprorun.errors import EntryPointNotFound, SpecError, UserInputError
from reprorun.params import ParamType
from reprorun.projects.params import render_command, resolve_parameters
from reprorun.projects.spec import load_project


def write(directory: Path, text: str, name: str = "MLproject") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def spec_error(directory: Path, text: str) -> SpecError:
    """Load ``text`` as the MLproject of ``directory``; return the SpecError it must raise."""
    path = write(directory, text)
    with pytest.raises(SpecError) as info:
        load_project(directory)
    err = info.value
    assert isinstance(err, UserInputError)
    assert err.path == path
    assert err.line is not None, str(err)
    assert str(err).startswith(f"{path}:{err.line}: ")
    return err


# --- finding and basic parsing ---------------------------------------------------------------


@pytest.mark.parametrize("filename", ["MLproject", "MLProject", "mlproject", "MLPROJECT"])
def test_mlproject_found_case_insensitively(tmp_path, filename):
    path = write(tmp_path, "name: demo\nentry_points:\n  main:\n    command: echo hi\n", filename)
    project = load_project(tmp_path)
    assert project.spec_path == path
    assert project.name == "demo"
    assert project.directory == tmp_path.resolve()
    assert project.entry_point("main").command == "echo hi"


def test_full_project(tmp_path):
    write(
        tmp_path,
        """
        name: demo
        entry_points:
          main:
            parameters:
              alpha: float
              l1_ratio: {type: float, default: 0.1}
              n: {type: int, default: 3, min: 1, max: 10, help: "number of trees"}
              mode: {type: string, default: fast, choices: [fast, slow]}
              data: {type: path, default: not-yet-created.csv}
              src: uri
              plain:
            command: "python train.py {alpha} {l1_ratio} {n} {mode} {data} {src} {plain} ${HOME}"
          other:
            command: echo {{literal}}
        """,
    )
    project = load_project(tmp_path)
    main = project.entry_point("main")
    assert main.name == "main" and main.line == 3
    p = main.parameters
    assert list(p) == ["alpha", "l1_ratio", "n", "mode", "data", "src", "plain"]
    alpha = p["alpha"]
    assert (alpha.type, alpha.default, alpha.required, alpha.line) == (
        ParamType.FLOAT,
        None,
        True,
        5,
    )
    assert (p["l1_ratio"].default, p["l1_ratio"].required) == ("0.1", False)
    n = p["n"]
    assert (n.type, n.default, n.min, n.max) == (ParamType.INT, "3", 1, 10)
    assert n.help == "number of trees"
    assert (p["mode"].choices, p["mode"].default) == (("fast", "slow"), "fast")
    assert p["data"].default == "not-yet-created.csv"  # paths are checked at run time
    assert p["src"].type is ParamType.URI
    assert (p["plain"].type, p["plain"].default) == (ParamType.STRING, None)
    assert project.entry_point("other").parameters == {}
    assert project.env.kind is None


def test_numeric_choices_are_cast(tmp_path):
    write(
        tmp_path,
        """
        entry_points:
          main:
            parameters:
              k: {type: int, choices: [1, "2", 3], default: 2}
              lr: {type: float, choices: [0.1, 1]}
            command: echo {k} {lr}
        """,
    )
    params = load_project(tmp_path).entry_point("main").parameters
    assert params["k"].choices == (1, 2, 3)
    assert params["lr"].choices == (0.1, 1.0)


@pytest.mark.parametrize(
    ("yaml_default", "text"), [("true", "true"), ("1.5", "1.5"), ("'007'", "007"), ("x y", "x y")]
)
def test_defaults_kept_as_text(tmp_path, yaml_default, text):
    write(
        tmp_path,
        f"entry_points:\n  m:\n    parameters:\n      a: {{default: {yaml_default}}}\n"
        "    command: echo {a}\n",
    )
    assert load_project(tmp_path).entry_point("m").parameters["a"].default == text


@pytest.mark.parametrize("text", ["", "\n  \n", "# just a comment\n\n# another\n", "---\n", "{}\n"])
def test_an_empty_mlproject_is_an_error_naming_the_file(tmp_path, text):
    (tmp_path / "train.py").write_text("")
    path = tmp_path / "MLproject"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_project(tmp_path)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}:1: MLproject is empty")
    assert "entry_points:" in str(info.value)


def test_an_mlproject_with_only_a_name_runs_scripts_as_mlflow_does(tmp_path):
    (tmp_path / "train.py").write_text("")
    write(tmp_path, "name: bare\n")
    project = load_project(tmp_path)
    assert project.name == "bare"
    assert project.entry_point("train.py").command == "python train.py"


# --- errors carry file and line -----------------------------------------------------------


@pytest.mark.parametrize(
    ("ptype", "default"), [("int", "abc"), ("int", "2.5"), ("float", "nan"), ("int", "11")]
)
def test_bad_default_reported_at_default_line(tmp_path, ptype, default):
    err = spec_error(
        tmp_path,
        f"""
        entry_points:
          main:
            parameters:
              n:
                type: {ptype}
                default: "{default}"
                max: 10
            command: echo {{n}}
        """,
    )
    assert err.line == 6  # the line of the `default` key
    assert f"the default {default!r}" in err.message


def test_default_outside_choices(tmp_path):
    err = spec_error(
        tmp_path,
        """
        entry_points:
          main:
            parameters:
              mode:
                choices: [a, b]
                default: c
            command: echo {mode}
        """,
    )
    assert err.line == 6


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: x\nentry_points:\n  main:\n    command: [unclosed\n", 5),
        ("name: x\n\tentry_points: 1\n", 2),
        ("name: x\nentry_points:\n  main:\n    command: a\n   bad: b\n", 5),
    ],
)
def test_yaml_syntax_error(tmp_path, text, line):
    err = spec_error(tmp_path, text)
    assert err.line == line
    assert "YAML syntax error" in err.message


def test_not_utf8(tmp_path):
    (tmp_path / "MLproject").write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SpecError, match="UTF-8") as info:
        load_project(tmp_path)
    assert info.value.path == tmp_path / "MLproject"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("- a\n- b\n", 1, "top level"),
        ("name: [a]\n", 1, "'name'"),
        ("name: x\nentry_points:\n  - main\n", 2, "entry_points"),
        ("entry_points:\n  main: echo hi\n", 2, "entry point 'main'"),
        ("entry_points:\n  main:\n    parameters: {}\n", 3, "'command'"),  # body start
        ("entry_points:\n  main:\n    command: '  '\n", 3, "'command'"),
        ("entry_points:\n  main:\n    parameters: [a, b]\n    command: echo\n", 3, "'parameters'"),
        ("entry_points:\n  main:\n    parameters:\n      a: 3\n    command: echo\n", 4, "'a'"),
        (
            "entry_points:\n  main:\n    parameters:\n      a:\n        default: [1, 2]\n"
            "    command: echo\n",
            5,
            "single value",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      a:\n        help: 3\n"
            "    command: echo\n",
            5,
            "'help'",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      a:\n        choices: []\n"
            "    command: echo\n",
            5,
            "choices",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      a:\n        type: int\n"
            "        choices: [1, x]\n    command: echo\n",
            6,
            "choice 'x'",
        ),
    ],
)
def test_structure_errors_name_file_and_line(tmp_path, text, line, fragment):
    err = spec_error(tmp_path, text)
    assert err.line == line
    assert fragment in err.message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "entry_points:\n  main:\n    command: echo\n    cmd: x\n",
            4,
            "ignoring unknown key 'cmd'",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      alpha: floaty\n    command: echo\n",
            4,
            "unknown type 'floaty' treated as string",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      a:\n        type: floaty\n    command: echo\n",
            5,
            "unknown type 'floaty'",
        ),
        (
            "entry_points:\n  main:\n    parameters:\n      a:\n        type: int\n        description: x\n    command: echo\n",
            6,
            "ignoring unknown key 'description'",
        ),
    ],
)
def test_what_mlflow_ignores_is_accepted_with_a_located_warning(tmp_path, text, line, fragment):
    # MLflow ignores unknown keys and passes unknown types through: existing projects must load.
    (tmp_path / "MLproject").write_text(text)
    project = load_project(tmp_path)
    [warning] = project.warnings
    assert warning.startswith(f"{tmp_path / 'MLproject'}:{line}: ")
    assert fragment in warning


@pytest.mark.parametrize(
    ("alias", "expected"),
    [("str", "string"), ("integer", "int"), ("double", "float"), ("Float", "float")],
)
def test_type_aliases(tmp_path, alias, expected):
    (tmp_path / "MLproject").write_text(
        f"entry_points:\n  main:\n    parameters:\n      a: {alias}\n    command: echo\n"
    )
    project = load_project(tmp_path)
    assert project.entry_points["main"].parameters["a"].type.value == expected
    assert project.warnings == ()


def test_format_specs_are_refused(tmp_path):
    err = spec_error(
        tmp_path,
        "entry_points:\n  main:\n    parameters:\n      x: float\n    command: echo {x:.2f}\n",
    )
    assert err.line == 5
    assert "{x:.2f}" in err.message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: a\nname: b\n", 2),
        ("entry_points:\n  main:\n    command: a\n  main:\n    command: b\n", 4),
        (
            "entry_points:\n  main:\n    parameters:\n      a: int\n      a: float\n"
            "    command: echo {a}\n",
            5,
        ),
    ],
)
def test_duplicate_keys(tmp_path, text, line):
    err = spec_error(tmp_path, text)
    assert err.line == line
    assert "duplicate key" in err.message


def test_undeclared_placeholder(tmp_path):
    err = spec_error(
        tmp_path,
        """
        entry_points:
          main:
            parameters:
              alpha: float
            command: python train.py {alpha} {beta}
        """,
    )
    assert err.line == 5
    assert "{beta}" in err.message and "alpha" in err.message


@pytest.mark.parametrize("bound", ["min", "max"])
@pytest.mark.parametrize("ptype", ["string", "path", "uri"])
def test_bounds_only_for_numbers(tmp_path, bound, ptype):
    err = spec_error(
        tmp_path,
        f"entry_points:\n  main:\n    parameters:\n      a:\n        type: {ptype}\n"
        f"        {bound}: 1\n    command: echo {{a}}\n",
    )
    assert err.line == 6
    assert bound in err.message


@pytest.mark.parametrize("value", ["'1'", "true", "[1]"])
def test_bounds_must_be_numbers(tmp_path, value):
    err = spec_error(
        tmp_path,
        f"entry_points:\n  main:\n    parameters:\n      a:\n        type: int\n"
        f"        min: {value}\n    command: echo {{a}}\n",
    )
    assert err.line == 6


# --- environments ----------------------------------------------------------------------------

COMMAND = "entry_points:\n  main:\n    command: echo\n"


@pytest.mark.parametrize(
    ("env_lines", "second"),
    [
        ("python_env: python_env.yaml\nconda_env: conda.yaml\n", 5),
        ("conda_env: conda.yaml\ndocker_env:\n  image: x\n", 5),
        ("python_env: python_env.yaml\ndocker_env:\n  image: x\n", 5),
    ],
)
def test_only_one_environment(tmp_path, env_lines, second):
    (tmp_path / "python_env.yaml").write_text("python: '3.11'\n")
    (tmp_path / "conda.yaml").write_text("name: x\n")
    err = spec_error(tmp_path, COMMAND + env_lines)
    assert err.line == second
    assert "only one environment" in err.message


@pytest.mark.parametrize("kind", ["python_env", "conda_env"])
def test_env_file_declared(tmp_path, kind):
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "e.yaml").write_text("x: 1\n")
    write(tmp_path, COMMAND + f"{kind}: envs/e.yaml\n")
    env = load_project(tmp_path).env
    assert (env.kind, env.path, env.docker) == (kind, tmp_path.resolve() / "envs" / "e.yaml", None)


@pytest.mark.parametrize("kind", ["python_env", "conda_env"])
def test_env_file_missing(tmp_path, kind):
    err = spec_error(tmp_path, COMMAND + f"{kind}: missing.yaml\n")
    assert err.line == 4
    assert "missing.yaml" in err.message


def test_env_file_must_be_a_string(tmp_path):
    err = spec_error(tmp_path, COMMAND + "python_env: [a]\n")
    assert err.line == 4


@pytest.mark.parametrize(
    ("files", "kind", "filename"),
    [
        (["conda.yaml"], "conda_env", "conda.yaml"),
        (["python_env.yaml"], "python_env", "python_env.yaml"),
        (["python_env.yaml", "conda.yaml"], "python_env", "python_env.yaml"),
    ],
)
@pytest.mark.parametrize("with_mlproject", [True, False])
def test_default_env_files(tmp_path, files, kind, filename, with_mlproject):
    for f in files:
        (tmp_path / f).write_text("x: 1\n")
    if with_mlproject:
        write(tmp_path, COMMAND)
    env = load_project(tmp_path).env
    assert (env.kind, env.path) == (kind, tmp_path.resolve() / filename)


def test_no_env_at_all(tmp_path):
    write(tmp_path, COMMAND)
    env = load_project(tmp_path).env
    assert (env.kind, env.path, env.docker) == (None, None, None)


def test_docker_env(tmp_path):
    write(
        tmp_path,
        COMMAND
        + """
docker_env:
  image: python:3.11-slim
  volumes: ["/data:/data", "/tmp:/tmp"]
  environment: [["NEW_VAR", "value"], "FROM_HOST", [NUM, 3]]
""",
    )
    env = load_project(tmp_path).env
    assert env.kind == "docker_env" and env.path is None
    assert env.docker == DockerEnv(
        image="python:3.11-slim",
        volumes=("/data:/data", "/tmp:/tmp"),
        environment=(("NEW_VAR", "value"), ("FROM_HOST", None), ("NUM", "3")),
    )


def test_docker_env_image_only(tmp_path):
    write(tmp_path, COMMAND + "docker_env:\n  image: img\n")
    assert load_project(tmp_path).env.docker == DockerEnv(image="img")


@pytest.mark.parametrize(
    ("docker", "line", "fragment"),
    [
        ("docker_env: img\n", 4, "mapping"),
        ("docker_env:\n  volumes: []\n", 5, "image"),
        ("docker_env:\n  image: [a]\n", 5, "image"),
        ("docker_env:\n  image: i\n  volumes: /data:/data\n", 6, "volumes"),
        ("docker_env:\n  image: i\n  volumes: [1]\n", 6, "volumes"),
        ("docker_env:\n  image: i\n  environment: A=1\n", 6, "environment"),
        ("docker_env:\n  image: i\n  environment: [[A]]\n", 6, "environment"),
        ("docker_env:\n  image: i\n  environment: [[A, 1, 2]]\n", 6, "environment"),
        ("docker_env:\n  image: i\n  environment: [{A: 1}]\n", 6, "environment"),
    ],
)
def test_docker_env_invalid(tmp_path, docker, line, fragment):
    err = spec_error(tmp_path, COMMAND + docker)
    assert err.line == line
    assert fragment in err.message


# --- entry points ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "command"),
    [
        ("train.py", "python train.py"),
        ("run.sh", "bash run.sh"),
        ("fit.R", "Rscript fit.R"),
        ("my script.py", "python 'my script.py'"),
    ],
)
@pytest.mark.parametrize("with_mlproject", [True, False])
def test_script_entry_points(tmp_path, script, command, with_mlproject):
    (tmp_path / script).write_text("")
    if with_mlproject:
        write(tmp_path, COMMAND)
    project = load_project(tmp_path)
    assert (project.spec_path is None) is not with_mlproject
    ep = project.entry_point(script)
    assert (ep.name, ep.command, dict(ep.parameters)) == (script, command, {})


def test_script_in_subdirectory(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("")
    assert load_project(tmp_path).entry_point("src/train.py").command == "python src/train.py"


def test_declared_entry_point_wins_over_script(tmp_path):
    (tmp_path / "train.py").write_text("")
    write(tmp_path, "entry_points:\n  train.py:\n    command: custom\n")
    assert load_project(tmp_path).entry_point("train.py").command == "custom"


@pytest.mark.parametrize("name", ["nope", "missing.py", "notes.txt"])
def test_unknown_entry_point_lists_available(tmp_path, name):
    (tmp_path / "train.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    write(tmp_path, "entry_points:\n  main:\n    command: a\n  eval:\n    command: b\n")
    with pytest.raises(EntryPointNotFound) as info:
        load_project(tmp_path).entry_point(name)
    assert info.value.name == name
    assert info.value.available == ["eval", "main", "train.py"]
    assert "eval, main, train.py" in str(info.value)
    assert isinstance(info.value, UserInputError)


def test_unknown_entry_point_in_empty_directory(tmp_path):
    with pytest.raises(EntryPointNotFound, match="none declared") as info:
        load_project(tmp_path).entry_point("main")
    assert info.value.available == []


def test_an_unknown_entry_point_names_the_mlproject(tmp_path):
    path = write(tmp_path, "entry_points: {}\n")
    with pytest.raises(EntryPointNotFound) as info:
        load_project(tmp_path).entry_point("main")
    assert f"Unknown entry point 'main' in {path}." in str(info.value)


# --- command templates: braces as MLflow's str.format reads them ----------------------------


@pytest.mark.parametrize(
    ("command", "column", "brace"),
    [
        ("python train.py {alpha", 17, "{"),
        ("python train.py {alpha} {", 25, "{"),
        ("echo done}", 10, "}"),
        ("echo {{alpha}", 13, "}"),  # {{ is a literal brace, so the } closes nothing
        ("echo {alpha}}", 13, "}"),
        ("awk '{if (x) {print $1}}'", 6, "{"),  # }} is a literal }: both { stay open
    ],
)
def test_an_unbalanced_brace_in_a_command_is_refused_at_load(tmp_path, command, column, brace):
    err = spec_error(
        tmp_path,
        f"""
        entry_points:
          main:
            parameters: {{alpha: {{default: 1}}}}
            command: {yaml.safe_dump(command, default_style="'").strip()}
        """,
    )
    assert err.line == 4
    message = str(err)
    assert "entry point 'main'" in message
    assert f"unbalanced '{brace}' at column {column} of the command" in message
    assert f"\n    {command}\n    {' ' * (column - 1)}^\n" in message
    assert "{{ and }}" in message


def test_an_unbalanced_brace_in_a_multi_line_command_names_the_line_of_the_command(tmp_path):
    err = spec_error(
        tmp_path,
        """
        entry_points:
          main:
            command: |
              echo start
              echo {oops
        """,
    )
    assert err.line == 3
    assert "unbalanced '{' at line 2, column 6 of the command" in str(err)
    assert "\n    echo {oops\n         ^\n" in str(err)


@pytest.mark.parametrize(
    "command",
    [
        "echo ${HOME} {alpha}",
        "awk '{print $1}' data.csv",
        "for i in {1..3}; do echo $i; done",
        "f() { echo {alpha}; }; f",
        "echo {{literal}} {{ }}",
        "echo ${X:-{alpha}}",
    ],
)
def test_balanced_braces_that_are_not_placeholders_stay_shell_text(tmp_path, command):
    write(
        tmp_path,
        "entry_points:\n  main:\n    parameters: {alpha: {default: 1}}\n"
        f"    command: {yaml.safe_dump(command, default_style=chr(39)).strip()}\n",
    )
    ep = load_project(tmp_path).entry_point("main")
    rendered = render_command(ep.command, resolve_defaults(ep.parameters, tmp_path))
    assert "{alpha}" not in rendered


def test_a_script_entry_point_with_braces_in_its_name_runs_that_file(tmp_path):
    (tmp_path / "a{alpha}.py").write_text("")
    (tmp_path / "b{.py").write_text("")
    write(tmp_path, "name: p\n")
    project = load_project(tmp_path)
    assert render_command(project.entry_point("a{alpha}.py").command, []) == "python 'a{alpha}.py'"
    assert render_command(project.entry_point("b{.py").command, []) == "python 'b{.py'"


def resolve_defaults(declared, directory):
    return resolve_parameters(declared, {}, cwd=directory, project_dir=directory)


_TEMPLATE_TEXT = st.text(alphabet="{}$:!.[]'\" \\-_ab01\n", max_size=30)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(command=_TEMPLATE_TEXT)
def test_any_command_template_renders_or_is_refused_naming_the_file(tmp_path, command):
    """Whatever the command text: loading refuses it with a SpecError naming the MLproject,
    or rendering succeeds; and where MLflow's str.format accepts a template of plain words,
    the rendered command is MLflow's."""
    path = tmp_path / "MLproject"
    path.write_text(
        yaml.safe_dump(
            {
                "entry_points": {
                    "main": {
                        "parameters": {"a": {"default": "x y"}, "b": {"default": "1"}},
                        "command": command,
                    }
                }
            }
        )
    )
    try:
        ep = load_project(tmp_path).entry_point("main")
    except SpecError as exc:
        assert exc.path == path
        return
    rendered = render_command(ep.command, resolve_defaults(ep.parameters, tmp_path))
    assert isinstance(rendered, str)
    if not any(c in command for c in "$'\"\\"):
        try:
            expected = command.format(a=shlex.quote("x y"), b="1")
        except (ValueError, KeyError, IndexError, AttributeError, TypeError):
            return  # MLflow refuses it; reprorun keeps balanced shell braces as text
        assert rendered == expected
