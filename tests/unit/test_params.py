"""Unit tests for reprorun.projects.params: casting, checking, resolving and rendering."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reprorun.errors import ParameterError, ParamProblem, UserInputError
from reprorun.params import CastError, ParamType, cast_value, format_value
from reprorun.projects.params import (
    Parameter,
    ResolvedParam,
    parse_param_args,
    placeholders,
    render_command,
    resolve_parameters,
)
from reprorun.projects.spec import load_project

BASE = Path("/nonexistent-base")  # for types that never touch the file system


def cast(ptype: ParamType, raw: str, base_dir: Path = BASE):
    return cast_value(ptype, raw, base_dir=base_dir)


def declared(name: str, value: str) -> ResolvedParam:
    return ResolvedParam(name, value, value, "cli", True)


def extra(name: str, value: str) -> ResolvedParam:
    return ResolvedParam(name, value, value, "extra", False)


# --- cast_value ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [("3", 3), ("-2", -2), (" 7 ", 7), ("+4", 4), ("0", 0)]
)
def test_int_accepts(raw, expected):
    value = cast(ParamType.INT, raw)
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize("raw", ["3.0", "abc", "1e3", "", " ", "3 4", "0x10", "1_000"])
def test_int_rejects(raw):
    with pytest.raises(CastError) as info:
        cast(ParamType.INT, raw)
    assert info.value.expected == "an integer"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0.01", 0.01), ("1e-3", 0.001), (".5", 0.5), ("3", 3.0), ("-2.5E2", -250.0), (" 1.5 ", 1.5)],
)
def test_float_accepts(raw, expected):
    value = cast(ParamType.FLOAT, raw)
    assert value == expected
    assert type(value) is float


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "Infinity", "abc", "", "1e", "1.2.3"])
def test_float_rejects(raw):
    with pytest.raises(CastError):
        cast(ParamType.FLOAT, raw)


def test_float_overflow_is_not_finite():
    with pytest.raises(CastError) as info:
        cast(ParamType.FLOAT, "1e999")
    assert "finite" in info.value.expected


@pytest.mark.parametrize("raw", ["", " padded ", "x; rm -rf /", "3", "{a}", "ünï"])
def test_string_passes_through_unchanged(raw):
    assert cast(ParamType.STRING, raw) == raw


@pytest.mark.parametrize(
    "raw", ["s3://bucket/key", "file:///abs/path", "https://example.com/x?y=1", "gs://b"]
)
def test_uri_accepts_values_with_a_scheme(raw):
    assert cast(ParamType.URI, raw) == raw


@pytest.mark.parametrize("raw", ["", "data.csv", "/abs/path", "relative/path"])
def test_uri_rejects_values_without_a_scheme(raw):
    with pytest.raises(CastError) as info:
        cast(ParamType.URI, raw)
    assert "scheme" in info.value.expected


def test_path_relative_is_resolved_against_base_dir(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("1\n")
    assert cast(ParamType.PATH, "data/x.csv", tmp_path) == str(tmp_path / "data" / "x.csv")
    assert cast(ParamType.PATH, "./data/../data", tmp_path) == str(tmp_path / "data")


def test_path_absolute_is_kept(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("")
    assert cast(ParamType.PATH, str(target), Path("/")) == str(target)


def test_path_file_uri(tmp_path):
    target = tmp_path / "with space.txt"
    target.write_text("")
    uri = target.as_uri()  # percent-encodes the space
    assert "%20" in uri
    assert cast(ParamType.PATH, uri, Path("/")) == str(target)


@pytest.mark.parametrize("raw", ["missing.csv", "", "file:///definitely/not/here"])
def test_path_must_exist(tmp_path, raw):
    with pytest.raises(CastError) as info:
        cast(ParamType.PATH, raw, tmp_path)
    assert "existing" in info.value.expected


def test_path_file_uri_with_a_host_does_not_resolve_to_base_dir(tmp_path):
    # file://missing.csv has netloc 'missing.csv' and an empty path: it must not be
    # silently taken as base_dir (which exists), whatever the interpretation of the host.
    with pytest.raises(CastError):
        cast(ParamType.PATH, "file://missing.csv", tmp_path)


@pytest.mark.parametrize("raw", ["s3://bucket/key", "gs://b/k.csv", "https://example.com/x?y=1"])
def test_path_keeps_a_url_it_downloads_later(tmp_path, raw):
    assert cast(ParamType.PATH, raw, tmp_path) == raw  # the runner downloads it (issue 16)


def test_path_rejects_a_uri_it_cannot_download_and_suggests_uri_type(tmp_path):
    with pytest.raises(CastError) as info:
        cast(ParamType.PATH, "hdfs://namenode/key", tmp_path)
    assert "type uri" in info.value.expected
    with pytest.raises(CastError):
        cast(ParamType.PATH, "https:///no-host", tmp_path)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.1, "0.1"), (1e-20, "1e-20"), (3.0, "3.0"), (1e16, "1e+16"), (3, "3"), ("s", "s")],
)
def test_format_value(value, text):
    assert format_value(value) == text


# --- Parameter.check -----------------------------------------------------------------------


def test_check_choices():
    p = Parameter("mode", ParamType.STRING, choices=("fast", "slow"))
    assert p.check("fast", base_dir=BASE) == "fast"
    with pytest.raises(CastError) as info:
        p.check("medium", base_dir=BASE)
    assert "fast" in info.value.expected and "slow" in info.value.expected


def test_check_numeric_choices_compare_cast_values():
    p = Parameter("k", ParamType.INT, choices=(1, 2, 3))
    assert p.check(" 2", base_dir=BASE) == 2
    with pytest.raises(CastError):
        p.check("4", base_dir=BASE)


@pytest.mark.parametrize(
    ("raw", "ok"), [("0", True), ("0.5", True), ("1", True), ("-0.01", False), ("1.01", False)]
)
def test_check_min_max(raw, ok):
    p = Parameter("alpha", ParamType.FLOAT, min=0, max=1)
    if ok:
        assert p.check(raw, base_dir=BASE) == float(raw)
    else:
        with pytest.raises(CastError) as info:
            p.check(raw, base_dir=BASE)
        assert "at least 0" in info.value.expected or "at most 1" in info.value.expected


def test_check_only_min():
    p = Parameter("n", ParamType.INT, min=1)
    assert p.check("1000000", base_dir=BASE) == 1_000_000
    with pytest.raises(CastError, match="at least 1"):
        p.check("0", base_dir=BASE)


def test_check_casts_before_bounds():
    p = Parameter("n", ParamType.INT, min=1)
    with pytest.raises(CastError) as info:
        p.check("one", base_dir=BASE)
    assert info.value.expected == "an integer"


# --- resolve_parameters --------------------------------------------------------------------


def test_resolve_reports_every_problem_at_once():
    params = {
        "alpha": Parameter("alpha", ParamType.FLOAT),
        "n": Parameter("n", ParamType.INT, default="3"),
        "k": Parameter("k", ParamType.INT, min=0, max=5),
        "need": Parameter("need", ParamType.STRING),
        "ok": Parameter("ok", ParamType.STRING, default="x"),
    }
    with pytest.raises(ParameterError) as info:
        resolve_parameters(
            params,
            {"alpha": "abc", "n": "2.5", "k": "9"},
            cwd=BASE,
            project_dir=BASE,
            entry_point="main",
        )
    err = info.value
    by_name = {p.name: p for p in err.problems}
    assert set(by_name) == {"alpha", "n", "k", "need"}
    assert by_name["alpha"] == ParamProblem("alpha", "a float", "abc")
    assert by_name["n"] == ParamProblem("n", "an integer", "2.5")
    assert by_name["k"].given == "9" and "at most 5" in by_name["k"].expected
    assert by_name["need"] == ParamProblem("need", "string", None)
    assert err.entry_point == "main"
    assert isinstance(err, UserInputError)
    text = str(err)
    for name in ("alpha", "n", "k", "need", "'main'"):
        assert name in text
    assert "no value given" in text


def test_resolve_bad_default_is_reported_as_the_default():
    params = {"n": Parameter("n", ParamType.INT, default="x")}
    with pytest.raises(ParameterError) as info:
        resolve_parameters(params, {}, cwd=BASE, project_dir=BASE)
    assert info.value.problems == [ParamProblem("n", "an integer", "x (the default)")]


def test_resolve_sources_and_extras():
    params = {
        "alpha": Parameter("alpha", ParamType.FLOAT, default="0.5"),
        "n": Parameter("n", ParamType.INT, default="1"),
    }
    result = resolve_parameters(
        params, {"n": "7", "undeclared": "some value"}, cwd=BASE, project_dir=BASE
    )
    assert result == [
        ResolvedParam("alpha", 0.5, "0.5", "default", True),
        ResolvedParam("n", 7, "7", "cli", True),
        ResolvedParam("undeclared", "some value", "some value", "extra", False),
    ]


def test_resolve_text_is_the_text_given_once_checked():
    # As MLflow: the command gets what the user typed, not repr(float) of it (issue 16, 1b).
    params = {"alpha": Parameter("alpha", ParamType.FLOAT), "n": Parameter("n", ParamType.INT)}
    result = resolve_parameters(params, {"alpha": "1e-3", "n": " 7 "}, cwd=BASE, project_dir=BASE)
    assert [(r.value, r.text) for r in result] == [(0.001, "1e-3"), (7, "7")]


def test_float_given_as_integer_text_reaches_the_command_as_given():
    params = {"cv_folds": Parameter("cv_folds", ParamType.FLOAT, default="3")}
    result = resolve_parameters(params, {"cv_folds": "5"}, cwd=BASE, project_dir=BASE)
    assert [(r.value, r.text) for r in result] == [(5.0, "5")]
    assert render_command("python train.py {cv_folds}", result) == "python train.py 5"


@pytest.mark.parametrize(
    ("yaml_default", "text"),
    [
        ("5", "5"),
        ("0.10", "0.1"),
        ("1.0e-3", "0.001"),
        ("1e-3", "1e-3"),
        ("2.50", "2.5"),
        ("'0.10'", "0.10"),
    ],
)
def test_float_default_text_is_str_of_the_yaml_value(tmp_path, yaml_default, text):
    # MLflow passes str() of the value YAML parsed: `default: 5` is the int 5, so "5".
    (tmp_path / "MLproject").write_text(
        "name: p\nentry_points:\n  main:\n    parameters:\n"
        f"      x: {{type: float, default: {yaml_default}}}\n"
        "    command: echo {x}\n"
    )
    project = load_project(tmp_path)
    ep = project.entry_points["main"]
    result = resolve_parameters(ep.parameters, {}, cwd=tmp_path, project_dir=tmp_path)
    assert [r.text for r in result] == [text]
    assert render_command(ep.command, result) == f"echo {text}"


def test_resolve_cli_paths_relative_to_cwd_defaults_relative_to_project(tmp_path):
    cwd, project = tmp_path / "cwd", tmp_path / "project"
    for d in (cwd, project):
        d.mkdir()
        (d / "data.csv").write_text("")
    params = {
        "given": Parameter("given", ParamType.PATH, default="nope.csv"),
        "default": Parameter("default", ParamType.PATH, default="data.csv"),
    }
    result = resolve_parameters(params, {"given": "data.csv"}, cwd=cwd, project_dir=project)
    assert [(r.name, r.value, r.source) for r in result] == [
        ("given", str(cwd / "data.csv"), "cli"),
        ("default", str(project / "data.csv"), "default"),
    ]


def test_a_path_given_as_a_uri_or_absolute_is_recorded_as_given_and_passed_local(tmp_path):
    # As MLflow (its _create_run logs the value given): code that looks for an earlier run by
    # its params (MLflow's multistep example) finds it with the text it passed.
    (tmp_path / "d").mkdir()
    params = {n: Parameter(n, ParamType.PATH) for n in ("uri", "absolute", "relative")}
    given = {"uri": f"file://{tmp_path}/d", "absolute": f"{tmp_path}/d/../d", "relative": "d"}
    result = resolve_parameters(params, given, cwd=tmp_path, project_dir=tmp_path)
    assert [(r.text, r.passed) for r in result] == [
        (f"file://{tmp_path}/d", str(tmp_path / "d")),
        (f"{tmp_path}/d/../d", str(tmp_path / "d")),
        (str(tmp_path / "d"), str(tmp_path / "d")),  # relative: recorded made absolute
    ]


def test_resolve_cli_path_not_found_relative_to_cwd(tmp_path):
    (tmp_path / "data.csv").write_text("")  # exists in project_dir, not in cwd
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    params = {"p": Parameter("p", ParamType.PATH)}
    with pytest.raises(ParameterError) as info:
        resolve_parameters(params, {"p": "data.csv"}, cwd=cwd, project_dir=tmp_path)
    assert [p.name for p in info.value.problems] == ["p"]


# --- parse_param_args ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (["a=1", "b=x y"], {"a": "1", "b": "x y"}),
        (["expr=a=b==c"], {"expr": "a=b==c"}),
        (["empty="], {"empty": ""}),
        (["a=1", "a=1"], {"a": "1"}),  # the same value twice is harmless
        ([" k =v"], {"k": "v"}),
    ],
)
def test_parse_param_args(args, expected):
    assert parse_param_args(args) == expected


@pytest.mark.parametrize("arg", ["novalue", "=value", "  =x", ""])
def test_parse_param_args_needs_key_and_equals(arg):
    with pytest.raises(UserInputError, match="KEY=VALUE"):
        parse_param_args([arg])


def test_parse_param_args_rejects_conflicting_duplicates():
    with pytest.raises(UserInputError, match="twice") as info:
        parse_param_args(["a=1", "a=2"])
    assert "'1'" in str(info.value) and "'2'" in str(info.value)


# --- placeholders / render_command ---------------------------------------------------------


def test_placeholders():
    assert placeholders("run {a} {{lit}} ${HOME} {b} {a}") == ["a", "b", "a"]


@pytest.mark.parametrize(
    "value", ["x; touch /tmp/p", "$(id)", "`id`", "a b", "it's", "", "-rf", "*", "$HOME", "\n"]
)
def test_render_quotes_each_value_as_one_argument(value):
    command = render_command("prog --v {v} end", [declared("v", value)])
    assert shlex.split(command) == ["prog", "--v", value, "end"]


def test_render_quotes_injection_literally():
    command = render_command("python t.py {a}", [declared("a", "x; touch /tmp/p")])
    assert command == "python t.py 'x; touch /tmp/p'"


def test_render_braces_and_shell_variables():
    command = render_command("echo {{literal}} ${HOME} {{{a}}} $x", [declared("a", "v")])
    assert command == "echo {literal} ${HOME} {v} $x"


def test_render_appends_extras_quoted():
    params = [declared("a", "1"), extra("flag", "two words"), extra("x;y", "$(id)")]
    command = render_command("prog {a}", params)
    assert command == "prog 1 --flag 'two words' '--x;y' '$(id)'"
    assert shlex.split(command) == ["prog", "1", "--flag", "two words", "--x;y", "$(id)"]


def test_render_substitutes_every_occurrence_once():
    # A value that looks like a placeholder is not substituted again.
    params = [declared("a", "{b}"), declared("b", "B")]
    assert shlex.split(render_command("p {a} {b} {a}", params)) == ["p", "{b}", "B", "{b}"]


# --- properties ----------------------------------------------------------------------------

_no_nul = st.text().filter(lambda s: "\x00" not in s)


@given(_no_nul)
def test_property_render_round_trips_through_shlex(value):
    assert shlex.split(render_command("prog {a}", [declared("a", value)])) == ["prog", value]


@given(st.integers())
def test_property_int_round_trip(i):
    assert cast(ParamType.INT, str(i)) == i


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_property_float_round_trip(f):
    value = cast(ParamType.FLOAT, repr(f))
    assert value == f
    assert math.copysign(1.0, value) == math.copysign(1.0, f)
    assert format_value(value) == repr(f)


@given(st.lists(st.tuples(_no_nul, _no_nul), max_size=5))
def test_property_extras_round_trip(pairs):
    params = [extra(k, v) for k, v in pairs]
    expected = ["prog"] + [item for k, v in pairs for item in ("--" + k, v)]
    assert shlex.split(render_command("prog", params)) == expected


# --- placeholders inside the template's own quotes ------------------------------------------

QUOTED_TEMPLATE = "prog {a} '{a}' \"{a}\" \"--m={a} end\" 'x{a}y'"


@given(st.text().filter(lambda s: "\x00" not in s))
def test_values_stay_literal_inside_template_quotes(value: str) -> None:
    rendered = render_command(QUOTED_TEMPLATE, [ResolvedParam("a", value, value, "cli", True)])
    assert shlex.split(rendered) == ["prog", value, value, value, f"--m={value} end", f"x{value}y"]


def test_quoted_placeholder_injection_runs_nothing(tmp_path: Path) -> None:
    import subprocess

    value = f"$(touch {tmp_path}/i1)x; touch {tmp_path}/i2 `touch {tmp_path}/i3`"
    rendered = render_command(
        QUOTED_TEMPLATE.replace("prog", "printf '%s\\n'"),
        [ResolvedParam("a", value, value, "cli", True)],
    )
    out = subprocess.run(
        ["bash", "-c", rendered], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[0] == value
    assert list(tmp_path.iterdir()) == []
