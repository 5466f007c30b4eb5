"""The grammar of parameter sweeps: ``reprorun sweep URI -P NAME=EXPR ... [--random N]``.

    EXPR := item ("," item)*                    values in this order; one item is a list of one
          | range(a, b[, step])                 integers, b excluded, as Python's range()
          | linspace(a, b, n)                   n floats from a to b inclusive
          | logspace(a, b, n)                   10**x for x in linspace(a, b, n)
          | uniform(a, b) | loguniform(a, b)    distributions, only for random search:
          | randint(a, b) | choice(item, ...)   floats, integers a..b-1, one of the items
    item := text without "," | 'quoted' | "quoted"   (a doubled quote inside is one quote)

Every value is text, as it will be passed on a command line: integers as ``str(int)``, floats as
``repr(float)``, items as written. Every error is a ``SweepSyntaxError`` that names the parameter,
quotes the expression and points at the position.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass
from typing import TypeAlias

from reprorun.errors import SweepSyntaxError

LIMIT = 100_000  # points of a sweep; also values of one range()/linspace(), built in memory

_CALL = re.compile(r"\s*([A-Za-z_]\w*)\s*\(")
_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?(?![\w.])")
_INTEGER = re.compile(r"[-+]?[0-9]+")
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
# Number of arguments of the numeric functions; choice() takes one item or more.
_ARITY = {
    "range": (2, 3),
    "linspace": (3, 3),
    "logspace": (3, 3),
    "uniform": (2, 2),
    "loguniform": (2, 2),
    "randint": (2, 2),
}
FUNCTIONS = tuple(sorted([*_ARITY, "choice"]))


@dataclass(frozen=True)
class Discrete:
    """Values to go through in order: a list, range(), linspace() or logspace()."""

    values: tuple[str, ...]

    def sample(self, rng: random.Random) -> str:
        return rng.choice(self.values)


@dataclass(frozen=True)
class Distribution:
    """What only random search can use: uniform(), loguniform(), randint() or choice()."""

    kind: str
    low: float = 0.0  # randint keeps exact ints here; high is excluded
    high: float = 0.0
    choices: tuple[str, ...] = ()

    def sample(self, rng: random.Random) -> str:
        if self.kind == "choice":
            return rng.choice(self.choices)
        if self.kind == "randint":
            return str(rng.randrange(int(self.low), int(self.high)))
        if self.kind == "loguniform":
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            x = rng.uniform(self.low, self.high)
        return repr(min(max(x, self.low), self.high))  # rounding must not leave the bounds


Values: TypeAlias = Discrete | Distribution


class _Cursor:
    """Reads one expression left to right; errors point at the current position by default."""

    def __init__(self, name: str, text: str):
        self.name, self.text, self.pos = name, text, 0

    def skip_ws(self) -> str:
        """Skips whitespace; returns the next character ("" at the end)."""
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos : self.pos + 1]

    def fail(
        self, message: str, pos: int | None = None, hint: str | None = None
    ) -> SweepSyntaxError:
        where = self.pos if pos is None else pos
        return SweepSyntaxError(message, name=self.name, text=self.text, pos=where, hint=hint)

    def items(self, closer: str) -> list[tuple[str, int]]:
        """Comma-separated items, with their positions, up to ``closer`` ("" is the end)."""
        items: list[tuple[str, int]] = []
        while True:
            char, start = self.skip_ws(), self.pos
            if char and char in "'\"":
                quoted = _QUOTED.match(self.text, start)
                if quoted is None:
                    raise self.fail("unterminated quote")
                items.append((quoted.group()[1:-1].replace(char * 2, char), start))
                self.pos = quoted.end()
                char = self.skip_ws()
            else:
                end = start
                while end < len(self.text) and self.text[end] not in "," + closer:
                    end += 1
                if not self.text[start:end].strip():
                    raise self.fail("expected a value")
                items.append((self.text[start:end].strip(), start))
                self.pos, char = end, self.text[end : end + 1]
            if char == closer:
                return items
            if char != ",":
                raise self.fail(f"expected ',' or {closer!r}" if closer else "expected ','")
            self.pos += 1

    def numbers(self) -> list[tuple[str, int]]:
        """Comma-separated numbers, with their positions, up to a ")" (left unread)."""
        numbers: list[tuple[str, int]] = []
        while True:
            self.skip_ws()
            number = _NUMBER.match(self.text, self.pos)
            if number is None:
                raise self.fail("expected a number")
            numbers.append((number.group(), self.pos))
            self.pos = number.end()
            char = self.skip_ws()
            if char == ")":
                return numbers
            if char != ",":
                raise self.fail("expected ',' or ')'")
            self.pos += 1

    def integer(self, arg: tuple[str, int]) -> int:
        if not _INTEGER.fullmatch(arg[0]):
            raise self.fail(f"expected an integer, got {arg[0]!r}", arg[1])
        try:
            return int(arg[0])
        except ValueError:  # over Python's 4300-digit limit
            raise self.fail("the number is too long", arg[1]) from None

    def real(self, arg: tuple[str, int]) -> float:
        value = float(arg[0])
        if not math.isfinite(value):
            raise self.fail("the number is out of range", arg[1])
        return value


def parse_sweep_arg(arg: str) -> tuple[str, Values]:
    """``NAME=EXPR`` (the text after ``-P``) -> the name and its values."""
    eq = arg.find("=")
    if eq < 0:
        raise SweepSyntaxError("expected '=' after the parameter name", text=arg, pos=len(arg))
    name = arg[:eq].strip()
    if not name:
        raise SweepSyntaxError("expected a parameter name before '='", text=arg, pos=eq)
    return name, parse_values(name, arg[eq + 1 :])


def parse_values(name: str, expr: str) -> Values:
    """The values one parameter sweeps over, or the distribution random search draws from."""
    c = _Cursor(name, expr)
    call = _CALL.match(expr)
    if call is None:
        items = c.items("")
        return _discrete(c, [item for item, _ in items], [pos for _, pos in items])
    function, at = call.group(1), call.start(1)
    if function not in FUNCTIONS:
        hint = f"Known functions: {', '.join(FUNCTIONS)}; quote a value that contains '('."
        raise c.fail(f"unknown function {function!r}", at, hint)
    c.pos = call.end()
    if function == "choice":
        choices = tuple(item for item, _ in c.items(")"))
        values: Values = Distribution("choice", choices=choices)
    else:
        values = _call(c, function, at, c.numbers())
    c.pos += 1  # the ")"
    if c.skip_ws():
        raise c.fail("unexpected text after ')'")
    return values


def _call(c: _Cursor, function: str, at: int, args: list[tuple[str, int]]) -> Values:
    low, high = _ARITY[function]
    if not low <= len(args) <= high:
        count = f"{low}" if low == high else f"{low} or {high}"
        where = args[high][1] if len(args) > high else c.pos
        raise c.fail(f"{function}() takes {count} arguments, got {len(args)}", where)
    if function == "range":
        start, stop, step = (c.integer(arg) for arg in (*args, ("1", 0))[:3])
        if step == 0:
            raise c.fail("the step of range() must not be 0", args[2][1])
        size = max(0, -((start - stop) // step))  # len(range()) without its overflow
        if size == 0:
            raise c.fail(f"range({start}, {stop}, {step}) is empty", at)
        _check_size(c, function, size, at)
        return _discrete(c, [str(i) for i in range(start, stop, step)], [at] * size)
    if function in ("linspace", "logspace"):
        a, b, n = c.real(args[0]), c.real(args[1]), c.integer(args[2])
        if n < 1:
            raise c.fail(f"{function}() needs n >= 1, got {n}", args[2][1])
        _check_size(c, function, n, at)
        xs = [a] if n == 1 else [a + (b - a) * i / (n - 1) for i in range(n - 1)] + [b]
        try:
            floats = [10.0**x for x in xs] if function == "logspace" else xs
        except OverflowError:
            floats = [math.inf]
        if not all(math.isfinite(x) for x in floats):
            raise c.fail(f"{function}() gives values out of the range of floats", at)
        return _discrete(c, [repr(x) for x in floats], [at] * n)
    if function == "randint":
        a, b = c.integer(args[0]), c.integer(args[1])
    else:
        a, b = c.real(args[0]), c.real(args[1])
        if function == "loguniform" and a <= 0:
            raise c.fail("loguniform() needs 0 < a", args[0][1])
        if not math.isfinite(b - a):
            raise c.fail(f"{function}() has bounds too far apart", args[0][1])
    if not a < b:
        raise c.fail(f"{function}() needs a < b", args[0][1])
    return Distribution(function, a, b)


def _check_size(c: _Cursor, function: str, size: int, at: int) -> None:
    if size > LIMIT:
        hint = "Sample a wide interval with randint() or uniform() and --random N."
        raise c.fail(f"{function}() would give {size:,} values, over {LIMIT:,}", at, hint)


def _discrete(c: _Cursor, values: list[str], positions: list[int]) -> Discrete:
    seen: set[str] = set()
    for value, pos in zip(values, positions, strict=True):
        if value in seen:  # the same point twice would run the same thing twice
            raise c.fail(f"the value {value!r} is repeated", pos)
        seen.add(value)
    return Discrete(tuple(values))


def expand(
    sweeps: list[tuple[str, Values]], *, random_count: int | None = None, seed: int | None = None
) -> list[dict[str, str]]:
    """The points of a sweep: the full grid, or ``random_count`` points drawn with ``seed``."""
    names = [name for name, _ in sweeps]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise SweepSyntaxError("given twice: put all its values in one -P", name=name)
    grid = [values.values for _, values in sweeps if isinstance(values, Discrete)]
    size = math.prod(len(values) for values in grid)
    if random_count is None:
        for name, values in sweeps:
            if isinstance(values, Distribution):
                message = f"{values.kind}() is a distribution: sample it with --random N"
                raise SweepSyntaxError(message, name=name)
        if size > LIMIT:
            message = f"the grid would have {size:,} points, over the limit of {LIMIT:,}"
            raise SweepSyntaxError(message, hint="Give fewer values, or sample with --random N.")
        return [dict(zip(names, point, strict=True)) for point in itertools.product(*grid)]
    if not 1 <= random_count <= LIMIT:
        raise SweepSyntaxError(f"--random takes 1 to {LIMIT:,} points, got {random_count}")
    rng = random.Random(seed)  # noqa: S311 (reproducible sampling, not secrets)
    if len(grid) < len(sweeps):
        return [{name: values.sample(rng) for name, values in sweeps} for _ in range(random_count)]
    if random_count > size:
        raise SweepSyntaxError(f"--random {random_count}: the grid only has {size:,} points")
    return [_grid_point(names, grid, index) for index in _distinct(rng, size, random_count)]


def _distinct(rng: random.Random, size: int, count: int) -> list[int]:
    """``count`` distinct indices below ``size``, which may be far beyond sys.maxsize."""
    if size <= 4 * count:
        return rng.sample(range(size), count)
    chosen: dict[int, None] = {}  # sparse: a repeat is rare, so draw again
    while len(chosen) < count:
        chosen[rng.randrange(size)] = None
    return list(chosen)


def _grid_point(names: list[str], grid: list[tuple[str, ...]], index: int) -> dict[str, str]:
    """The ``index``-th point of the grid in itertools.product order (first name slowest)."""
    point: dict[str, str] = {}
    for name, values in reversed(list(zip(names, grid, strict=True))):
        index, i = divmod(index, len(values))
        point[name] = values[i]
    return {name: point[name] for name in names}
