"""MLflow's search grammar for runs and experiments: parse a filter, parse order-by clauses,
compile both to SQL, and encode page tokens.

    filter   := clause ("AND" clause)*
    clause   := ident op value | ident ("IS NULL" | "IS NOT NULL")
    ident    := entity "." key           entity: metric(s) param(s)/parameter(s) tag(s)
                                                 attribute(s)/attr/run dataset(s); key plain,
                                                 "quoted" or `backticked`
    op       := = != > >= < <= LIKE ILIKE IN NOT IN
    value    := number | 'string' | "string" | "(" string ("," string)* ")"

Parsing knows nothing of SQL; ``compile_runs_filter`` and friends turn the parsed clauses into a
WHERE fragment with named placeholders only (values never enter the SQL text). Every error is a
``SearchError`` that quotes the filter and points at the offending position.

``datasets.name``, ``datasets.digest`` and ``datasets.context`` (the ``mlflow.data.context`` tag
of the input) test a run's dataset inputs, which the store keeps as JSON in the run tag
``INPUTS_TAG``; a clause holds when one of the run's datasets satisfies it (as MLflow's join). The
store reads those tags and matches them here, in Python (``runs_matching_datasets``): a JSON tag
any client may have set to anything cannot break the query, on SQLite or PostgreSQL alike.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


_RUN_STRING_ATTRIBUTES = {
    "run_id": "run_uuid",
    "run_name": "name",
    "run name": "name",
    "status": "status",
    "user_id": "user_id",
    "artifact_uri": "artifact_uri",
    "lifecycle_stage": "lifecycle_stage",
}
_RUN_NUMERIC_ATTRIBUTES = {
    "start_time": "start_time",
    "end_time": "end_time",
    "created": "start_time",
}
RUN_NUMERIC_ATTRIBUTES = frozenset(_RUN_NUMERIC_ATTRIBUTES)
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


# --- SQL --------------------------------------------------------------------------------------

RUN_SEARCH_ATTRIBUTES = {*_RUN_STRING_ATTRIBUTES, *_RUN_NUMERIC_ATTRIBUTES} - {"lifecycle_stage"}
# Beyond MLflow: runs can also be ordered by how long they took (the UI's duration column).
RUN_ORDER_ATTRIBUTES = RUN_SEARCH_ATTRIBUTES | {"duration"}


class SqlBuilder:
    """Collects WHERE/JOIN fragments and their named parameters for one statement."""

    def __init__(self, dialect: str):
        self.dialect = dialect
        self.params: dict[str, Any] = {}
        self.joins: list[str] = []

    def bind(self, value: Any) -> str:
        name = f"q{len(self.params)}"
        self.params[name] = value
        return ":" + name

    def compare(self, column: str, op: str, value: Any) -> str:
        # A backslash is an ordinary character everywhere (PostgreSQL would read it as an
        # escape; SQLite's LIKE and GLOB do not).
        escape = "" if self.dialect == "sqlite" else " ESCAPE ''"
        if op == "LIKE":
            if self.dialect == "sqlite":  # SQLite's LIKE ignores case; GLOB does not.
                return f"{column} GLOB {self.bind(_like_to_glob(str(value)))}"
            return f"{column} LIKE {self.bind(value)}{escape}"
        if op == "ILIKE":
            # LOWER is Unicode-aware on SQLite too (database.py registers Python's).
            return f"LOWER({column}) LIKE LOWER({self.bind(value)}){escape}"
        if op in SET_OPS:
            assert isinstance(value, tuple)
            if not value:
                return "1 = 0" if op == "IN" else "1 = 1"
            names = ", ".join(self.bind(v) for v in value)
            return f"{column} {op} ({names})"
        return f"{column} {op} {self.bind(value)}"

    def member_of(self, column: str, values: Sequence[str]) -> str:
        """``column`` is one of ``values``, bound as one JSON list however many they are."""
        items = self.bind(json.dumps(list(values)))
        if self.dialect == "sqlite":
            return f"{column} IN (SELECT value FROM json_each({items}))"
        return f"{column} IN (SELECT json_array_elements_text(CAST({items} AS json)))"


def _like_to_glob(pattern: str) -> str:
    out = []
    for ch in pattern:
        out.append({"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}.get(ch, ch))
    return "".join(out)


def compile_runs_filter(
    clauses: Sequence[Clause],
    sql: SqlBuilder,
    run: str = "r",
    dataset_runs: Sequence[str] | None = None,
) -> list[str]:
    """WHERE conditions over the runs table aliased ``run``. ``datasets.*`` clauses keep the
    runs ``dataset_runs`` names (what ``runs_matching_datasets`` found); they need it."""
    conditions: list[str] = []
    if any(c.entity == DATASET for c in clauses):
        if dataset_runs is None:
            raise ValueError("datasets.* clauses need the runs whose inputs match them")
        conditions.append(sql.member_of(f"{run}.run_uuid", dataset_runs))
    for c in clauses:
        if c.entity == DATASET:
            continue
        if c.entity == ATTRIBUTE:
            key = c.key.lower()
            column = _RUN_STRING_ATTRIBUTES.get(key) or _RUN_NUMERIC_ATTRIBUTES.get(key)
            if column is None:
                raise SearchError(
                    f"Invalid filter: unknown attribute {c.key!r}; searchable attributes are "
                    f"{', '.join(sorted(RUN_SEARCH_ATTRIBUTES))}."
                )
            value = c.value
            if key in _RUN_NUMERIC_ATTRIBUTES and isinstance(value, float) and value.is_integer():
                value = int(value)
            conditions.append(sql.compare(f"{run}.{column}", c.op, value))
            continue
        table = {METRIC: "latest_metrics", PARAM: "params", TAG: "tags"}[c.entity]
        key = sql.bind(c.key)
        link = f'x.run_uuid = {run}.run_uuid AND x."key" = {key}'
        if c.op == "IS NULL":
            conditions.append(f"NOT EXISTS (SELECT 1 FROM {table} x WHERE {link})")
        elif c.op == "IS NOT NULL":
            conditions.append(f"EXISTS (SELECT 1 FROM {table} x WHERE {link})")
        else:
            extra = f" AND x.is_nan = {sql.bind(False)}" if c.entity == METRIC else ""
            test = sql.compare("x.value", c.op, c.value)
            conditions.append(f"EXISTS (SELECT 1 FROM {table} x WHERE {link}{extra} AND {test})")
    return conditions


def compile_runs_order(order: Sequence[OrderBy], sql: SqlBuilder, run: str = "r") -> list[str]:
    """ORDER BY terms (missing values last, as MLflow); adds LEFT JOINs to ``sql.joins``."""
    terms: list[str] = []
    for n, o in enumerate(order):
        direction = "ASC" if o.ascending else "DESC"
        if o.entity == ATTRIBUTE:
            key = o.key.lower()
            if key == "duration":
                column = f"({run}.end_time - {run}.start_time)"
            else:
                column = f"{run}.{_RUN_STRING_ATTRIBUTES.get(key) or _RUN_NUMERIC_ATTRIBUTES[key]}"
            # NULLs (a running run's end_time) last on every database.
            terms.append(f"CASE WHEN {column} IS NULL THEN 1 ELSE 0 END")
            terms.append(f"{column} {direction}")
            continue
        table = {METRIC: "latest_metrics", PARAM: "params", TAG: "tags"}[o.entity]
        alias = f"o{n}"
        sql.joins.append(
            f"LEFT JOIN {table} {alias} ON {alias}.run_uuid = {run}.run_uuid "
            f'AND {alias}."key" = {sql.bind(o.key)}'
        )
        # As MLflow: real values first, then NaN, then runs without the key; within the last
        # two groups only the tie-breakers order (the same on SQLite and PostgreSQL).
        if o.entity == METRIC:
            nan = f"{alias}.is_nan = {sql.bind(True)}"
            terms.append(f"CASE WHEN {alias}.value IS NULL THEN 2 WHEN {nan} THEN 1 ELSE 0 END")
            terms.append(f"CASE WHEN {nan} THEN NULL ELSE {alias}.value END {direction}")
        else:
            terms.append(f"CASE WHEN {alias}.value IS NULL THEN 1 ELSE 0 END")
            terms.append(f"{alias}.value {direction}")
    # MLflow's tie-breakers: newest first, then run id.
    terms += [f"{run}.start_time DESC", f"{run}.run_uuid"]
    return terms


EXPERIMENT_ORDER_ATTRIBUTES = {"name", "experiment_id", "creation_time", "last_update_time"}


def compile_experiments_filter(clauses: Sequence[Clause], sql: SqlBuilder) -> list[str]:
    conditions: list[str] = []
    for c in clauses:
        if c.entity == TAG:
            link = f'x.experiment_id = e.experiment_id AND x."key" = {sql.bind(c.key)}'
            if c.op in NULL_OPS:
                neg = "NOT " if c.op == "IS NULL" else ""
                conditions.append(f"{neg}EXISTS (SELECT 1 FROM experiment_tags x WHERE {link})")
            else:
                test = sql.compare("x.value", c.op, c.value)
                conditions.append(
                    f"EXISTS (SELECT 1 FROM experiment_tags x WHERE {link} AND {test})"
                )
        elif (
            c.entity == ATTRIBUTE and c.key in ("name", "experiment_id") and c.op not in NULL_OPS
        ) or (c.entity == ATTRIBUTE and c.key in ("creation_time", "last_update_time")):
            conditions.append(sql.compare(f"e.{c.key}", c.op, c.value))
        else:
            raise SearchError(
                f"Invalid experiment filter: cannot filter on {c.entity} {c.key!r}; use "
                "attributes.name, attributes.creation_time, attributes.last_update_time or tags.*."
            )
    return conditions


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


# --- dataset inputs ---------------------------------------------------------------------------

INPUTS_TAG = "reprorun.inputs"  # JSON {"datasets": [...], "models": [...]} as MLflow sent them
DATASET_CONTEXT_TAG = "mlflow.data.context"


@dataclass(frozen=True)
class DatasetRef:
    """What a filter can test of one dataset input: its name, digest and context (or None)."""

    name: str | None
    digest: str | None
    context: str | None


def dataset_refs(inputs_tag: str | None) -> list[DatasetRef]:
    """The dataset inputs an ``INPUTS_TAG`` value records; none if it holds anything else (any
    client can set any tag: a bad value must not break a search)."""
    try:
        inputs = json.loads(inputs_tag or "null")
    except ValueError:
        return []
    datasets = inputs.get("datasets") if isinstance(inputs, dict) else None
    refs: list[DatasetRef] = []
    for item in datasets if isinstance(datasets, list) else []:
        dataset = item.get("dataset") if isinstance(item, dict) else None
        if not isinstance(dataset, dict):
            continue
        tags = item.get("tags")
        context = next(
            (
                t.get("value")
                for t in (tags if isinstance(tags, list) else [])
                if isinstance(t, dict) and t.get("key") == DATASET_CONTEXT_TAG
            ),
            None,
        )
        refs.append(
            DatasetRef(_text(dataset.get("name")), _text(dataset.get("digest")), _text(context))
        )
    return refs


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def runs_matching_datasets(
    clauses: Sequence[Clause], inputs: Iterable[tuple[str, str | None]]
) -> list[str]:
    """The ids among ``inputs`` ((run id, ``INPUTS_TAG`` value) pairs) whose dataset inputs
    satisfy every ``datasets.*`` clause, each clause by one of the run's datasets (as MLflow)."""
    tests = [c for c in clauses if c.entity == DATASET]
    found = []
    for run_id, tag in inputs:
        refs = dataset_refs(tag)
        if all(any(_holds(c, getattr(ref, c.key)) for ref in refs) for c in tests):
            found.append(run_id)
    return found


def _holds(clause: Clause, actual: str | None) -> bool:
    """``actual op value`` as the SQL store compares strings; a missing value never holds."""
    value = clause.value
    if actual is None:
        return False
    if clause.op in SET_OPS:
        assert isinstance(value, tuple)
        return (actual in value) == (clause.op == "IN")
    assert isinstance(value, str)
    if clause.op == "=":
        return actual == value
    if clause.op == "!=":
        return actual != value
    if clause.op == "ILIKE":
        actual, value = actual.lower(), value.lower()
    pattern = "".join({"%": ".*", "_": "."}.get(ch) or re.escape(ch) for ch in value)
    return re.fullmatch(pattern, actual, re.DOTALL) is not None


# --- page tokens --------------------------------------------------------------------------------


def encode_page_token(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    """The offset in an MLflow-style page token (base64 JSON ``{"offset": n}``)."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.b64decode(token, validate=True))["offset"]
        offset = int(offset)
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        raise SearchError(f"Invalid page token {token!r}: {exc}") from None
    if not 0 <= offset < 2**62:  # databases take 64-bit offsets
        raise SearchError(f"Invalid page token {token!r}: offset {offset} out of range.")
    return offset


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
