"""Unit and property tests for reprorun.projects.sweep.grammar: the -P grammar of sweeps."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reprorun.errors import SweepSyntaxError, UserInputError
from reprorun.projects.sweep.grammar import (
    FUNCTIONS,
    LIMIT,
    Discrete,
    Distribution,
    Values,
    expand,
    parse_sweep_arg,
    parse_values,
)

PROPERTY = settings(max_examples=200, deadline=None)


def values_of(expr: str) -> tuple[str, ...]:
    parsed = parse_values("p", expr)
    assert isinstance(parsed, Discrete)
    return parsed.values


def caret_position(message: str, text: str) -> int:
    """Where the caret of a two-line message points, counted in ``text``."""
    first, caret = message.split("\n")[:2]
    assert caret.strip() == "^"
    return caret.index("^") - (first.rindex(f"'{text}'") + 1)


def sweep_error(arg: str, pos: int) -> str:
    """The message of parsing ``arg``, checked to point at ``pos`` of its expression."""
    with pytest.raises(SweepSyntaxError) as info:
        parse_sweep_arg(arg)
    text = info.value.text
    assert text is not None
    assert info.value.pos == pos
    message = str(info.value)
    assert f"at position {pos} in '{text}'" in message
    assert caret_position(message, text) == pos
    return message


# --- lists --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "values"),
    [
        ("0.01,0.02,0.05", ("0.01", "0.02", "0.05")),
        ("0.5", ("0.5",)),
        ("  0.5  ", ("0.5",)),
        (" 1 , 2 ,3 ", ("1", "2", "3")),
        ("0.010,1e-3,+2,.5", ("0.010", "1e-3", "+2", ".5")),  # exactly as written
        ("gini,entropy", ("gini", "entropy")),
        ("a b, c  d", ("a b", "c  d")),  # inner spaces stay
        ("'a,b', \"c d\"", ("a,b", "c d")),
        ('\'it\'\'s\', "say ""hi"""', ("it's", 'say "hi"')),
        ("'', x", ("", "x")),  # an empty value must be quoted
        ("it's,x", ("it's", "x")),  # a quote inside an unquoted item is plain text
        ("range", ("range",)),  # a function name without "(" is a value
        ("1,f(x)", ("1", "f(x)")),
        ("'range(2,8)'", ("range(2,8)",)),
        ("b=c", ("b=c",)),
    ],
)
def test_lists(expr: str, values: tuple[str, ...]) -> None:
    assert values_of(expr) == values


def test_parse_sweep_arg_splits_at_the_first_equals_and_strips_the_name() -> None:
    assert parse_sweep_arg(" cp = 0.01,0.02") == ("cp", Discrete(("0.01", "0.02")))
    assert parse_sweep_arg("opt=a=b") == ("opt", Discrete(("a=b",)))


# --- range, linspace, logspace ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "values"),
    [
        ("range(2,8)", range(2, 8)),
        ("range(0,10,3)", range(0, 10, 3)),
        ("range(8,2,-2)", range(8, 2, -2)),
        ("range(-3,0)", range(-3, 0)),
        (" range ( 2 , 8 , +2 ) ", range(2, 8, 2)),
        ("range(0,1)", range(0, 1)),
    ],
)
def test_range_is_pythons_range(expr: str, values: range) -> None:
    assert values_of(expr) == tuple(str(i) for i in values)


@pytest.mark.parametrize(
    ("expr", "values"),
    [
        ("linspace(0,1,3)", ("0.0", "0.5", "1.0")),
        ("linspace(0,1,11)", tuple(repr(i / 10) for i in range(11))),
        ("linspace(1, 0, 3)", ("1.0", "0.5", "0.0")),
        ("linspace(5,7,1)", ("5.0",)),
        ("linspace(-1e-3, 1e-3, 2)", ("-0.001", "0.001")),
        ("logspace(-2,0,3)", ("0.01", "0.1", "1.0")),
        ("logspace(0, 3, 4)", ("1.0", "10.0", "100.0", "1000.0")),
        ("logspace(1,1,1)", ("10.0",)),
    ],
)
def test_linspace_and_logspace(expr: str, values: tuple[str, ...]) -> None:
    assert values_of(expr) == values


def test_function_names_are_case_sensitive() -> None:
    message = sweep_error("n=Range(2,8)", 0)
    assert "unknown function 'Range'" in message


# --- distributions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("uniform(0,1)", Distribution("uniform", 0.0, 1.0)),
        ("uniform( -1.5 , 2 )", Distribution("uniform", -1.5, 2.0)),
        ("loguniform(1e-4,1e-1)", Distribution("loguniform", 1e-4, 1e-1)),
        ("randint(2,8)", Distribution("randint", 2, 8)),
        (
            "choice(gini, 'a,b', entropy)",
            Distribution("choice", choices=("gini", "a,b", "entropy")),
        ),
        ("choice(x)", Distribution("choice", choices=("x",))),
        ("choice(a,a,b)", Distribution("choice", choices=("a", "a", "b"))),  # repeats weigh
    ],
)
def test_distributions(expr: str, expected: Distribution) -> None:
    assert parse_values("p", expr) == expected


def test_distribution_samples_are_text_within_bounds() -> None:
    rng = random.Random(0)
    for _ in range(200):
        assert 0.0 <= float(parse_values("p", "uniform(0,1)").sample(rng)) <= 1.0
        assert 1e-4 <= float(parse_values("p", "loguniform(1e-4,1)").sample(rng)) <= 1.0
        assert parse_values("p", "randint(2,4)").sample(rng) in ("2", "3")
        assert parse_values("p", "choice(a,'b c')").sample(rng) in ("a", "b c")
    assert parse_values("p", "uniform(0,1)").sample(random.Random(1)) == repr(
        random.Random(1).uniform(0, 1)
    )


# --- errors -------------------------------------------------------------------------------------


def test_the_example_message_exactly() -> None:
    with pytest.raises(SweepSyntaxError) as info:
        parse_sweep_arg("maxdepth=range(2,)")
    assert str(info.value) == (
        "Sweep of parameter 'maxdepth': expected a number at position 8 in 'range(2,)'\n"
        + " " * 75
        + "^"
    )
    assert (info.value.name, info.value.text, info.value.pos) == ("maxdepth", "range(2,)", 8)


@pytest.mark.parametrize(
    ("arg", "pos", "fragment"),
    [
        ("maxdepth8", 9, "Sweep: expected '=' after the parameter name"),
        ("=0.1", 0, "Sweep: expected a parameter name before '='"),
        ("  =0.1", 2, "expected a parameter name before '='"),
        ("cp=", 0, "'cp': expected a value"),
        ("cp=  ", 2, "expected a value"),
        ("cp=0.1,,0.2", 4, "expected a value"),
        ("cp=0.1,", 4, "expected a value"),
        ("cp=,0.1", 0, "expected a value"),
        ("cp='a,b", 0, "unterminated quote"),
        ("cp='it''s", 4, "expected ','"),  # 'it' closes, then 's is left over
        ("cp='a'b", 3, "expected ','"),
        ("cp=0.1,0.2,0.1", 8, "the value '0.1' is repeated"),
        ("n=rnage(2,8)", 0, "unknown function 'rnage'"),
        ("n= f (x)", 1, "unknown function 'f'"),
        ("n=range(2,)", 8, "expected a number"),
        ("n=range()", 6, "expected a number"),
        ("n=range(a,3)", 6, "expected a number"),
        ("n=range(2 3)", 8, "expected ',' or ')'"),
        ("n=range(2,3", 9, "expected ',' or ')'"),
        ("n=range(2,8) x", 11, "unexpected text after ')'"),
        ("n=range(2,8),9", 10, "unexpected text after ')'"),
        ("n=range(2)", 7, "range() takes 2 or 3 arguments, got 1"),
        ("n=range(1,2,3,4)", 12, "range() takes 2 or 3 arguments, got 4"),
        ("n=range(2,8.0)", 8, "expected an integer, got '8.0'"),
        ("n=range(2,1e3)", 8, "expected an integer, got '1e3'"),
        ("n=range(2,8,0)", 10, "the step of range() must not be 0"),
        ("n=range(8,2)", 0, "range(8, 2, 1) is empty"),
        ("n=range(2,8,-1)", 0, "range(2, 8, -1) is empty"),
        ("n=range(0,1000000)", 0, "range() would give 1,000,000 values, over 100,000"),
        ("n=range(0," + "9" * 5000 + ")", 8, "the number is too long"),
        ("x=linspace(0,1)", 12, "linspace() takes 3 arguments, got 2"),
        ("x=linspace(0,1,0)", 13, "linspace() needs n >= 1, got 0"),
        ("x=linspace(0,1,2.5)", 13, "expected an integer, got '2.5'"),
        ("x=linspace(1,1,2)", 0, "the value '1.0' is repeated"),
        ("x=linspace(0,1e999,2)", 11, "the number is out of range"),
        ("x=linspace(-1e308,1e308,3)", 0, "linspace() gives values out of the range of floats"),
        ("x=logspace(0,400,2)", 0, "logspace() gives values out of the range of floats"),
        ("x=logspace(0,1,200000)", 0, "logspace() would give 200,000 values"),
        ("x=uniform(1,1)", 8, "uniform() needs a < b"),
        ("x=uniform(2,1)", 8, "uniform() needs a < b"),
        ("x=uniform(-1e308,1e308)", 8, "uniform() has bounds too far apart"),
        ("x=uniform(0)", 9, "uniform() takes 2 arguments, got 1"),
        ("x=loguniform(0,1)", 11, "loguniform() needs 0 < a"),
        ("x=loguniform(-1,1)", 11, "loguniform() needs 0 < a"),
        ("x=loguniform(2,1)", 11, "loguniform() needs a < b"),
        ("x=randint(1,2.5)", 10, "expected an integer, got '2.5'"),
        ("x=randint(3,3)", 8, "randint() needs a < b"),
        ("x=choice()", 7, "expected a value"),
        ("x=choice(a,)", 9, "expected a value"),
        ("x=choice(a,b", 10, "expected ',' or ')'"),
        ("x=choice('a' b)", 11, "expected ',' or ')'"),
        ("x=choice(a) b", 10, "unexpected text after ')'"),
    ],
)
def test_errors_point_at_the_problem(arg: str, pos: int, fragment: str) -> None:
    message = sweep_error(arg, pos)
    assert message.startswith("Sweep")
    assert fragment in message


def test_an_unknown_function_lists_the_known_ones() -> None:
    message = sweep_error("maxdepth=rnage(2,8)", 0)
    assert message.splitlines()[0] == (
        "Sweep of parameter 'maxdepth': unknown function 'rnage' at position 0 in 'rnage(2,8)'"
    )
    assert message.splitlines()[2].startswith("Known functions: " + ", ".join(FUNCTIONS))
    assert set(FUNCTIONS) == {
        "range",
        "linspace",
        "logspace",
        "uniform",
        "loguniform",
        "randint",
        "choice",
    }


def test_sweep_errors_are_user_input_errors() -> None:
    with pytest.raises(UserInputError):
        parse_sweep_arg("cp")


# --- expand -------------------------------------------------------------------------------------


def sweeps(*args: str) -> list[tuple[str, Values]]:
    return [parse_sweep_arg(arg) for arg in args]


def test_grid_first_parameter_varies_slowest() -> None:
    assert expand(sweeps("cp=0.01,0.02", "maxdepth=range(2,5)")) == [
        {"cp": "0.01", "maxdepth": "2"},
        {"cp": "0.01", "maxdepth": "3"},
        {"cp": "0.01", "maxdepth": "4"},
        {"cp": "0.02", "maxdepth": "2"},
        {"cp": "0.02", "maxdepth": "3"},
        {"cp": "0.02", "maxdepth": "4"},
    ]


def test_no_parameters_is_one_point() -> None:
    assert expand([]) == [{}]
    assert expand([], random_count=1, seed=0) == [{}]


def test_grid_refuses_distributions() -> None:
    with pytest.raises(SweepSyntaxError) as info:
        expand(sweeps("a=1,2", "cp=uniform(0,1)"))
    assert str(info.value) == (
        "Sweep of parameter 'cp': uniform() is a distribution: sample it with --random N"
    )


def test_choice_is_a_distribution_too() -> None:
    with pytest.raises(SweepSyntaxError, match=r"choice\(\) is a distribution"):
        expand(sweeps("crit=choice(gini,entropy)"))


def test_a_parameter_given_twice() -> None:
    with pytest.raises(SweepSyntaxError) as info:
        expand(sweeps("a=1,2", "b=3", "a=4"), random_count=1)
    assert str(info.value) == "Sweep of parameter 'a': given twice: put all its values in one -P"


def test_grid_over_the_limit_says_how_many_points() -> None:
    big = sweeps("a=range(0,1000)", "b=range(0,1000)")
    with pytest.raises(SweepSyntaxError) as info:
        expand(big)
    assert str(info.value).splitlines() == [
        "Sweep: the grid would have 1,000,000 points, over the limit of 100,000",
        "Give fewer values, or sample with --random N.",
    ]
    assert len(expand(sweeps("a=range(0,1000)", "b=range(0,100)"))) == LIMIT


def test_random_over_a_discrete_grid_is_distinct_grid_points() -> None:
    grid = sweeps("a=1,2,3", "b=x,y")
    points = expand(grid, random_count=6, seed=7)
    assert len(points) == 6
    assert {tuple(p.items()) for p in points} == {tuple(p.items()) for p in expand(grid)}
    assert expand(grid, random_count=4, seed=7) == expand(grid, random_count=4, seed=7)


def test_random_more_than_the_grid() -> None:
    with pytest.raises(SweepSyntaxError) as info:
        expand(sweeps("a=1,2,3", "b=x,y"), random_count=7, seed=0)
    assert str(info.value) == "Sweep: --random 7: the grid only has 6 points"


@pytest.mark.parametrize("count", [0, -1, LIMIT + 1])
def test_random_count_out_of_range(count: int) -> None:
    with pytest.raises(SweepSyntaxError, match=r"--random takes 1 to 100,000 points, got"):
        expand(sweeps("a=uniform(0,1)"), random_count=count, seed=0)


def test_random_over_a_huge_discrete_grid() -> None:
    # 10**40 points: far beyond sys.maxsize, never built
    digits: Values = Discrete(tuple(str(d) for d in range(10)))
    huge = [(f"p{i}", digits) for i in range(40)]
    points = expand(huge, random_count=50, seed=3)
    assert len({tuple(p.values()) for p in points}) == 50
    assert points == expand(huge, random_count=50, seed=3)
    assert all(list(p) == [f"p{i}" for i in range(40)] for p in points)


def test_random_with_distributions_may_exceed_the_discrete_grid() -> None:
    points = expand(sweeps("a=1,2", "lr=loguniform(1e-4,1e-1)"), random_count=10, seed=1)
    assert len(points) == 10
    assert all(p["a"] in ("1", "2") and 1e-4 <= float(p["lr"]) <= 1e-1 for p in points)


# --- properties ---------------------------------------------------------------------------------

FINITE = st.floats(allow_nan=False, allow_infinity=False)
SPACES = st.text(alphabet=" \t", max_size=2)


@PROPERTY
@given(
    st.lists(st.one_of(st.integers().map(str), FINITE.map(repr)), min_size=1, unique=True),
    st.data(),
)
def test_numbers_as_a_comma_list_parse_back(texts: list[str], data: st.DataObject) -> None:
    expr = ",".join(data.draw(SPACES) + t + data.draw(SPACES) for t in texts)
    assert values_of(expr) == tuple(texts)


def quote(text: str, q: str) -> str:
    return q + text.replace(q, q * 2) + q


@PROPERTY
@given(st.lists(st.text(), min_size=1, unique=True), st.sampled_from(["'", '"']))
def test_any_texts_quoted_parse_back(texts: list[str], q: str) -> None:
    assert values_of(" , ".join(quote(t, q) for t in texts)) == tuple(texts)
    choice = parse_values("p", f"choice({','.join(quote(t, q) for t in texts)})")
    assert choice == Distribution("choice", choices=tuple(texts))


@PROPERTY
@given(
    st.integers(-60, 60),
    st.integers(-60, 60),
    st.integers(-12, 12).filter(bool),
    st.booleans(),
)
def test_range_is_exactly_pythons(start: int, stop: int, step: int, explicit: bool) -> None:
    expected = [str(i) for i in range(start, stop, step if explicit else 1)]
    expr = f"range({start}, {stop}, {step})" if explicit else f"range({start},{stop})"
    if expected:
        assert list(values_of(expr)) == expected
    else:
        with pytest.raises(SweepSyntaxError, match="is empty"):
            values_of(expr)


@PROPERTY
@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(1, 50))
def test_linspace_ends_at_both_bounds(a: int, b: int, n: int) -> None:
    assume(a != b or n == 1)
    values = [float(v) for v in values_of(f"linspace({a},{b},{n})")]
    assert len(values) == n
    assert values[0] == a
    assert n == 1 or values[-1] == b
    assert values == sorted(values, reverse=a > b)


@st.composite
def discrete_sweeps(draw: st.DrawFn, max_params: int = 4) -> list[tuple[str, Values]]:
    names = draw(st.lists(st.text(min_size=1), max_size=max_params, unique=True))
    return [
        (name, Discrete(tuple(draw(st.lists(st.text(), min_size=1, max_size=4, unique=True)))))
        for name in names
    ]


@PROPERTY
@given(discrete_sweeps())
def test_grid_is_the_cartesian_product(grid: list[tuple[str, Values]]) -> None:
    points = expand(grid)
    sizes = [len(v.values) for _, v in grid if isinstance(v, Discrete)]
    assert len(points) == math.prod(sizes)
    assert len({tuple(p.items()) for p in points}) == len(points)
    products = itertools.product(*(v.values for _, v in grid if isinstance(v, Discrete)))
    assert [tuple(p.values()) for p in points] == list(products)


@PROPERTY
@given(discrete_sweeps(), st.integers(1, 300), st.integers())
def test_random_over_a_grid_is_deterministic_distinct_and_on_the_grid(
    grid: list[tuple[str, Values]], count: int, seed: int
) -> None:
    everything = [tuple(p.items()) for p in expand(grid)]
    if count > len(everything):
        with pytest.raises(SweepSyntaxError, match="the grid only has"):
            expand(grid, random_count=count, seed=seed)
        return
    points = expand(grid, random_count=count, seed=seed)
    assert points == expand(grid, random_count=count, seed=seed)
    assert len(points) == count
    assert len({tuple(p.items()) for p in points}) == count
    assert {tuple(p.items()) for p in points} <= set(everything)


@PROPERTY
@given(
    discrete_sweeps(max_params=2),
    FINITE,
    FINITE,
    st.integers(-(10**20), 10**20),
    st.integers(1, 10**6),
    st.integers(1, 50),
    st.integers(),
)
def test_random_with_distributions_stays_within_bounds(
    grid: list[tuple[str, Values]],
    x: float,
    y: float,
    low: int,
    width: int,
    count: int,
    seed: int,
) -> None:
    a, b = sorted((x, y))
    assume(a < b and math.isfinite(b - a))
    assume(not {"\0u", "\0r", "\0l"} & {name for name, _ in grid})
    mixed = [
        *grid,
        ("\0u", parse_values("u", f"uniform({a!r},{b!r})")),
        ("\0r", parse_values("r", f"randint({low},{low + width})")),
        ("\0l", parse_values("l", "loguniform(1e-5, 1e3)")),
    ]
    points = expand(mixed, random_count=count, seed=seed)
    assert points == expand(mixed, random_count=count, seed=seed)
    assert len(points) == count
    for point in points:
        assert a <= float(point["\0u"]) <= b
        assert low <= int(point["\0r"]) < low + width
        assert 1e-5 <= float(point["\0l"]) <= 1e3
        for name, values in grid:
            assert isinstance(values, Discrete)
            assert point[name] in values.values


GRAMMARISH = st.lists(
    st.sampled_from(
        [*FUNCTIONS, "(", ")", ",", " ", "'", '"', "''", "=", "-", "1", "2.5", "1e3", "x", "0"]
    ),
    max_size=12,
).map("".join)


@PROPERTY
@given(st.one_of(st.text(), GRAMMARISH))
def test_any_text_parses_or_raises_sweep_syntax_error(text: str) -> None:
    try:
        name, values = parse_sweep_arg(text)
    except SweepSyntaxError as exc:
        assert exc.text is not None and exc.pos is not None
        assert 0 <= exc.pos <= len(exc.text)
        assert f"'{exc.text}'" in str(exc)
        if "\n" not in exc.text:
            assert caret_position(str(exc), exc.text) == exc.pos
    else:
        assert name == name.strip() and name
        assert isinstance(values, Discrete | Distribution)
        if isinstance(values, Discrete):
            assert values.values and len(set(values.values)) == len(values.values)
        else:
            assert isinstance(values.sample(random.Random(0)), str)
