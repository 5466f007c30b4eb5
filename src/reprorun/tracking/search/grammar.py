"""MLflow's filter and order-by grammar: parse a filter string into clauses (and write clauses
back as one), parse order-by clauses, and check what each entity accepts.

    filter   := clause ("AND" clause)*
    clause   := ident op value | ident ("IS NULL" | "IS NOT NULL")
    ident    := entity "." key           entity: metric(s) param(s)/parameter(s) tag(s)
                                                 attribute(s)/attr/run dataset(s); key plain,
                                                 "quoted" or `backticked`
    op       := = != > >= < <= LIKE ILIKE IN NOT IN
    value    := number | 'string' | "string" | "(" string ("," string)* ")"

Parsing knows nothing of SQL (reprorun.tracking.search.sql compiles the clauses). Every error
is a ``SearchError`` that quotes the filter and points at the offending position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reprorun.errors import SearchError

METRIC, PARAM, TAG, ATTRIBUTE, DATASET = "metric", "param", "tag", "attribute", "dataset"
_ENTITIES = {
    "metric": METRIC,
    "metrics": METRIC,
    "param": PARAM,
    "params": PARAM,
    "parameter": PARAM,
    "parameters": PARAM,
    "tag": TAG,
    "tags": TAG,
    "attribute": ATTRIBUTE,
    "attributes": ATTRIBUTE,
    "attr": ATTRIBUTE,
    "run": ATTRIBUTE,
    "dataset": DATASET,
    "datasets": DATASET,
}
DATASET_KEYS = ("name", "digest", "context")

NUMERIC_OPS = frozenset({"=", "!=", ">", ">=", "<", "<="})
STRING_OPS = frozenset({"=", "!=", "LIKE", "ILIKE"})
NULL_OPS = frozenset({"IS NULL", "IS NOT NULL"})
SET_OPS = frozenset({"IN", "NOT IN"})


@dataclass(frozen=True)
class Clause:
    """One comparison: ``entity.key op value``."""

    entity: str  # METRIC, PARAM, TAG, ATTRIBUTE or DATASET
    key: str
    op: str  # upper case, one space between words: "NOT IN", "IS NULL"
    value: float | str | tuple[str, ...] | None


@dataclass(frozen=True)
class OrderBy:
    entity: str
    key: str
    ascending: bool


# --- tokenizer --------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)(?![\w.]))
  | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<backtick>`[^`]*`)
  | (?P<op>!=|>=|<=|=|>|<|==)
  | (?P<punct>[(),.])
  | (?P<word>[A-Za-z_][\w\-:/]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


def _tokenize(text: str, what: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _error(what, text, pos, f"unexpected character {text[pos]!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            tokens.append(_Token(kind, m.group(), pos))
        pos = m.end()
    return tokens


def _error(what: str, text: str, pos: int, message: str) -> SearchError:
    pointer = " " * min(pos, len(text)) + "^"
    return SearchError(f"Invalid {what}: {message} at position {pos}:\n  {text}\n  {pointer}")


def _unquote(token: _Token) -> str:
    quote = token.text[0]
    inner = token.text[1:-1]
    return inner if quote == "`" else inner.replace(quote * 2, quote)


class _Parser:
    def __init__(self, text: str, what: str, bare: frozenset[str] = frozenset()):
        self.text = text
        self.what = what
        self.bare = bare  # attribute names allowed without "attributes." (experiments: name)
        self.tokens = _tokenize(text, what)
        self.i = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self, expected: str) -> _Token:
        token = self.peek()
        if token is None:
            raise self.fail(f"expected {expected}, but the text ended", len(self.text))
        self.i += 1
        return token

    def fail(self, message: str, pos: int | None = None) -> SearchError:
        if pos is None:
            token = self.peek()
            pos = token.pos if token is not None else len(self.text)
        return _error(self.what, self.text, pos, message)

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.text.upper() in words

    def identifier(self) -> tuple[str, str, int]:
        token = self.next("an identifier such as metrics.acc or params.model")
        if token.kind != "word":
            raise self.fail(
                f"expected an identifier such as metrics.acc, got {token.text!r}", token.pos
            )
        entity_text = token.text
        entity = _ENTITIES.get(entity_text.lower())
        following = self.peek()
        if (
            entity is None
            and entity_text in self.bare
            and (following is None or following.text != ".")
        ):
            return ATTRIBUTE, entity_text, token.pos
        if entity is None:
            raise self.fail(
                f"unknown entity {entity_text!r}; use metrics., params., tags., attributes. "
                "or datasets.",
                token.pos,
            )
        # The word regex stops at dots; a plain key may itself contain dots (metrics.a.b).
        dot = self.peek()
        if dot is None or dot.text != ".":
            raise self.fail(
                f"expected '.' and a key after {entity_text!r} (e.g. {entity_text}.acc)",
                token.pos + len(token.text),
            )
        self.i += 1
        key_token = self.next("a key")
        if key_token.kind in ("string", "backtick"):
            key = _unquote(key_token)
        elif key_token.kind in ("word", "number"):
            key = key_token.text
            # Glue dotted plain keys back together: metrics.val.acc -> "val.acc".
            while (
                (dot := self.peek()) is not None
                and dot.text == "."
                and dot.pos == key_token.pos + len(key_token.text)
            ):
                self.i += 1
                key_token = self.next("the rest of the key")
                if key_token.kind not in ("word", "number") or key_token.pos != dot.pos + 1:
                    raise self.fail("expected the rest of the key right after '.'", key_token.pos)
                key += "." + key_token.text
        else:
            raise self.fail(f"expected a key after {entity_text!r}.", key_token.pos)
        if not key:
            raise self.fail("the key is empty", key_token.pos)
        return entity, key, token.pos

    def operator(self) -> str:
        token = self.next("a comparison operator (=, !=, >, >=, <, <=, LIKE, ILIKE, IN)")
        if token.kind == "op":
            return "=" if token.text == "==" else token.text
        if token.kind == "word":
            word = token.text.upper()
            if word in ("LIKE", "ILIKE", "IN"):
                return word
            if word == "NOT" and self.keyword("IN"):
                self.i += 1
                return "NOT IN"
            if word == "IS":
                if self.keyword("NOT"):
                    self.i += 1
                    if not self.keyword("NULL"):
                        raise self.fail("expected NULL after IS NOT")
                    self.i += 1
                    return "IS NOT NULL"
                if self.keyword("NULL"):
                    self.i += 1
                    return "IS NULL"
                raise self.fail("expected NULL or NOT NULL after IS")
        raise self.fail(f"expected a comparison operator, got {token.text!r}", token.pos)

    def value(self, op: str) -> float | str | tuple[str, ...]:
        token = self.next("a value")
        if op in SET_OPS:
            if token.text != "(":
                raise self.fail(f"{op} needs a list in parentheses, e.g. ('a', 'b')", token.pos)
            items: list[str] = []
            while True:
                item = self.next("a quoted string")
                if item.kind != "string":
                    raise self.fail(f"expected a quoted string, got {item.text!r}", item.pos)
                items.append(_unquote(item))
                sep = self.next("',' or ')'")
                if sep.text == ")":
                    return tuple(items)
                if sep.text != ",":
                    raise self.fail(f"expected ',' or ')', got {sep.text!r}", sep.pos)
        if token.kind == "number":
            return float(token.text)
        if token.kind == "string":
            return _unquote(token)
        raise self.fail(
            f"expected a number or a quoted string, got {token.text!r}"
            + (" (quote string values: 'like this')" if token.kind == "word" else ""),
            token.pos,
        )


def parse_filter(
    text: str | None, numeric_attributes: frozenset[str] | None = None
) -> list[Clause]:
    """The clauses of an MLflow filter string (joined by AND); empty for no filter.

    ``numeric_attributes`` names the attributes compared with numbers (runs' by default).
    """
    numeric = RUN_NUMERIC_ATTRIBUTES if numeric_attributes is None else numeric_attributes
    return _parse_filter(text, numeric, frozenset())


_PREFIXES = {
    METRIC: "metrics",
    PARAM: "params",
    TAG: "tags",
    ATTRIBUTE: "attributes",
    DATASET: "datasets",
}
_PLAIN_KEY = re.compile(r"[A-Za-z_]\w*")


def format_filter(clauses: Iterable[Clause]) -> str:
    """The filter string of ``clauses``, the inverse of ``parse_filter``: every key and value
    is quoted, so any tag name or value (quotes included) reads back as it was. For a program
    that searches runs, instead of writing filter strings by hand."""

    def quoted(text: str, quote: str) -> str:
        return quote + text.replace(quote, quote * 2) + quote

    parts = []
    for clause in clauses:
        key = clause.key
        if not _PLAIN_KEY.fullmatch(key):
            key = f"`{key}`" if "`" not in key else quoted(key, '"')
        ident = f"{_PREFIXES[clause.entity]}.{key}"
        value = clause.value
        if clause.op in NULL_OPS:
            parts.append(f"{ident} {clause.op}")
        elif isinstance(value, tuple):
            items = ", ".join(quoted(item, "'") for item in value)
            parts.append(f"{ident} {clause.op} ({items})")
        elif isinstance(value, str):
            parts.append(f"{ident} {clause.op} " + quoted(value, "'"))
        else:
            parts.append(f"{ident} {clause.op} {value!r}")
    return " and ".join(parts)


def _parse_filter(text: str | None, numeric: frozenset[str], bare: frozenset[str]) -> list[Clause]:
    if text is None or not text.strip():
        return []
    parser = _Parser(text, "filter", bare)
    clauses: list[Clause] = []
    while True:
        entity, key, pos = parser.identifier()
        op = parser.operator()
        value = None if op in NULL_OPS else parser.value(op)
        clauses.append(_check_clause(Clause(entity, key, op, value), parser, pos, numeric))
        if parser.peek() is None:
            return clauses
        if parser.keyword("AND"):
            parser.i += 1
            continue
        if parser.keyword("OR"):
            raise parser.fail("OR is not supported (MLflow's grammar joins clauses with AND only)")
        token = parser.peek()
        assert token is not None
        raise parser.fail(f"expected AND or the end of the filter, got {token.text!r}")


# The runs' attributes compared with numbers (reprorun.tracking.search.sql maps each to its
# column, as it does the string attributes).
RUN_NUMERIC_ATTRIBUTES = frozenset({"start_time", "end_time", "created"})
EXPERIMENT_NUMERIC_ATTRIBUTES = frozenset({"creation_time", "last_update_time"})


def _check_clause(clause: Clause, parser: _Parser, pos: int, numeric: frozenset[str]) -> Clause:
    """Operators and value types each entity accepts, as MLflow's SearchUtils checks them."""
    where = f"{clause.entity}s.{clause.key}" if clause.entity != ATTRIBUTE else clause.key
    if clause.entity == METRIC or (clause.entity == ATTRIBUTE and clause.key.lower() in numeric):
        allowed = NUMERIC_OPS
        if clause.op in allowed and not isinstance(clause.value, float):
            raise parser.fail(f"{where} is compared with a number, got {clause.value!r}", pos)
    elif clause.entity == DATASET:
        if clause.key not in DATASET_KEYS:
            raise parser.fail(
                f"unknown dataset key {clause.key!r}; use datasets.name, datasets.digest or "
                "datasets.context",
                pos,
            )
        allowed = STRING_OPS | SET_OPS
        if clause.op in STRING_OPS and not isinstance(clause.value, str):
            raise parser.fail(f"{where} is compared with a quoted string", pos)
    elif clause.entity in (PARAM, TAG):
        allowed = STRING_OPS | NULL_OPS
        if clause.op in STRING_OPS and not isinstance(clause.value, str):
            raise parser.fail(
                f"{where} is compared with a quoted string, got {clause.value!r} "
                f"(write '{_format_number(clause.value)}')",
                pos,
            )
    else:
        allowed = STRING_OPS | SET_OPS
        if clause.op in STRING_OPS and not isinstance(clause.value, str):
            raise parser.fail(f"{where} is compared with a quoted string", pos)
    if clause.op not in allowed:
        raise parser.fail(
            f"{clause.op} cannot compare {where}; use one of {', '.join(sorted(allowed))}", pos
        )
    return clause


def _format_number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_order_by(items: Sequence[str] | None, allowed_attributes: set[str]) -> list[OrderBy]:
    """``["metrics.acc DESC", "attributes.start_time"]`` → OrderBy list (ascending default)."""
    result: list[OrderBy] = []
    for item in items or ():
        parser = _Parser(item, "order_by")
        token = parser.peek()
        if token is None:
            raise parser.fail("empty order_by clause")
        following = parser.tokens[1] if len(parser.tokens) > 1 else None
        if token.kind == "word" and (following is None or following.text != "."):
            # A bare attribute name: order_by=["start_time DESC"] (MLflow accepts it).
            parser.i += 1
            entity, key = ATTRIBUTE, token.text
        else:
            entity, key, _ = parser.identifier()
            if entity == DATASET:
                raise parser.fail(
                    "cannot order by a dataset; order by metrics., params., tags. or attributes.", 0
                )
        ascending = True
        if parser.keyword("ASC", "DESC"):
            ascending = parser.next("ASC or DESC").text.upper() == "ASC"
        if parser.peek() is not None:
            raise parser.fail("expected ASC, DESC or the end of the clause")
        if entity == ATTRIBUTE and key.lower() not in allowed_attributes:
            raise parser.fail(
                f"cannot order by attribute {key!r}; use one of "
                f"{', '.join(sorted(allowed_attributes))}",
                0,
            )
        result.append(OrderBy(entity, key, ascending))
    return result


def parse_experiment_filter(text: str | None) -> list[Clause]:
    """Experiment filters allow a bare ``name``: ``name LIKE 'iris%'`` (as MLflow)."""
    bare = frozenset({"name", "creation_time", "last_update_time"})
    clauses = _parse_filter(text, EXPERIMENT_NUMERIC_ATTRIBUTES, bare)
    return [
        Clause(c.entity, c.key, c.op, int(c.value))
        if c.entity == ATTRIBUTE and isinstance(c.value, float) and c.value.is_integer()
        else c
        for c in clauses
    ]


# --- logged models ------------------------------------------------------------------------------

MODEL_ATTRIBUTES = frozenset({"model_id", "name", "status", "source_run_id", "model_type"})


def parse_model_filter(text: str | None) -> list[Clause]:
    """Logged-model filters: ``name``, ``status``, ``source_run_id``, ``model_type`` (bare or
    ``attributes.``) and ``tags.*``, compared with = != LIKE ILIKE."""
    clauses = _parse_filter(text, frozenset(), MODEL_ATTRIBUTES)
    for c in clauses:
        if (c.entity == ATTRIBUTE and c.key not in MODEL_ATTRIBUTES) or c.entity not in (
            ATTRIBUTE,
            TAG,
        ):
            raise SearchError(
                f"Invalid logged model filter: cannot filter on {c.entity} {c.key!r}; use "
                f"{', '.join(sorted(MODEL_ATTRIBUTES))} or tags.*."
            )
        if c.op in NULL_OPS or c.op in SET_OPS:
            raise SearchError(f"Invalid logged model filter: {c.op} is not supported here.")
    return clauses
