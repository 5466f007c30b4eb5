"""Unit and property tests for reprorun.tracking.search: MLflow's search grammar.

MLflow's own parser (mlflow.utils.search_utils.SearchUtils) is the reference for what is
accepted and rejected; it cannot run here (mlflow is not installed in the test environment),
so the expectations below were checked against it by hand where they overlap.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprorun.errors import SearchError, UserInputError
from reprorun.tracking.search import (
    ATTRIBUTE,
    DATASET,
    METRIC,
    NULL_OPS,
    NUMERIC_OPS,
    PARAM,
    RUN_NUMERIC_ATTRIBUTES,
    RUN_ORDER_ATTRIBUTES,
    SET_OPS,
    STRING_OPS,
    TAG,
    Clause,
    OrderBy,
    SqlBuilder,
    compile_runs_filter,
    dataset_refs,
    decode_page_token,
    encode_page_token,
    parse_experiment_filter,
    parse_filter,
    parse_order_by,
    runs_matching_datasets,
)
from reprorun.tracking.search import sql as search_sql
from reprorun.tracking.search.sql import _like_to_glob

PROPERTY = settings(max_examples=200, deadline=None)

ALIASES = {
    METRIC: ("metric", "metrics"),
    PARAM: ("param", "params", "parameter", "parameters"),
    TAG: ("tag", "tags"),
    ATTRIBUTE: ("attribute", "attributes", "attr", "run"),
}
NUMERIC_RUN_ATTRIBUTES = ("start_time", "end_time", "created")
STRING_RUN_ATTRIBUTES = (
    "run_id",
    "run_name",
    "status",
    "user_id",
    "artifact_uri",
    "lifecycle_stage",
    "run name",
)
ALL_OPS = NUMERIC_OPS | STRING_OPS | NULL_OPS | SET_OPS


def b64(raw: str) -> str:
    return base64.b64encode(raw.encode()).decode()


def search_error(func, text: str, pos: int | None = None) -> str:
    """The message of the SearchError ``func(text)`` raises, checked to quote ``text`` and to
    point a caret at the reported position (at ``pos`` when given)."""
    with pytest.raises(SearchError) as info:
        func(text)
    message = str(info.value)
    assert isinstance(info.value, UserInputError)
    *_, quoted, caret = message.split("\n")
    assert quoted == "  " + text
    assert caret.strip() == "^"
    column = len(caret) - len("  ^")
    assert f"at position {column}:" in message
    if pos is not None:
        assert column == pos, message
    return message


def filter_error(text: str, pos: int | None = None) -> str:
    return search_error(parse_filter, text, pos)


# --- entities and keys --------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES[METRIC])
def test_metric_aliases(alias: str) -> None:
    assert parse_filter(f"{alias}.acc > 0.5") == [Clause(METRIC, "acc", ">", 0.5)]


@pytest.mark.parametrize("alias", ALIASES[PARAM])
def test_param_aliases(alias: str) -> None:
    assert parse_filter(f"{alias}.lr = '0.1'") == [Clause(PARAM, "lr", "=", "0.1")]


@pytest.mark.parametrize("alias", ALIASES[TAG])
def test_tag_aliases(alias: str) -> None:
    assert parse_filter(f"{alias}.team != 'ml'") == [Clause(TAG, "team", "!=", "ml")]


@pytest.mark.parametrize("alias", ALIASES[ATTRIBUTE])
def test_attribute_aliases(alias: str) -> None:
    assert parse_filter(f"{alias}.status = 'FINISHED'") == [
        Clause(ATTRIBUTE, "status", "=", "FINISHED")
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('metrics."a b" > 1', Clause(METRIC, "a b", ">", 1.0)),
        ("metrics.`a b` > 1", Clause(METRIC, "a b", ">", 1.0)),
        ("metrics.'a b' > 1", Clause(METRIC, "a b", ">", 1.0)),
        ("params.\"x.y\" = '1'", Clause(PARAM, "x.y", "=", "1")),
        ('tags."say ""hi""" = \'x\'', Clause(TAG, 'say "hi"', "=", "x")),
        ("tags.`it's` = 'x'", Clause(TAG, "it's", "=", "x")),
        ("attributes.\"run name\" = 'x'", Clause(ATTRIBUTE, "run name", "=", "x")),
        ("params.`AND` = 'x'", Clause(PARAM, "AND", "=", "x")),
    ],
)
def test_quoted_keys(text: str, expected: Clause) -> None:
    assert parse_filter(text) == [expected]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("metrics.val.acc > 0", "val.acc"),
        ("metrics.val.top_5.acc > 0", "val.top_5.acc"),
        ("params.optimizer.lr = '1'", "optimizer.lr"),
        ("tags.mlflow.runName = 'x'", "mlflow.runName"),
    ],
)
def test_dotted_plain_keys_are_one_key(text: str, key: str) -> None:
    [clause] = parse_filter(text)
    assert clause.key == key


def test_dotted_key_followed_by_operator_without_spaces() -> None:
    assert parse_filter("metrics.val.acc>=0.9") == [Clause(METRIC, "val.acc", ">=", 0.9)]


@pytest.mark.parametrize(
    ("text", "pos"), [("metrics.a. b > 1", 11), ("metrics.a.'b' > 1", 10), ("metrics.a.) > 1", 10)]
)
def test_a_dotted_key_must_continue_right_after_the_dot(text: str, pos: int) -> None:
    # Regression: "a. b" used to become the key "a.b", "a.'b'" the key "a.'b'" and "a.)" "a.)".
    assert "the rest of the key right after '.'" in filter_error(text, pos)


def test_keywords_are_keys_after_the_dot() -> None:
    assert parse_filter("params.and = 'x' AND params.IS IS NULL") == [
        Clause(PARAM, "and", "=", "x"),
        Clause(PARAM, "IS", "IS NULL", None),
    ]


# --- operators per entity -----------------------------------------------------------------------


@pytest.mark.parametrize("op", sorted(NUMERIC_OPS))
def test_metrics_take_every_numeric_operator(op: str) -> None:
    assert parse_filter(f"metrics.loss {op} 2") == [Clause(METRIC, "loss", op, 2.0)]


@pytest.mark.parametrize("key", NUMERIC_RUN_ATTRIBUTES)
@pytest.mark.parametrize("op", sorted(NUMERIC_OPS))
def test_numeric_attributes_take_every_numeric_operator(key: str, op: str) -> None:
    assert parse_filter(f"attributes.{key} {op} 1700000000000") == [
        Clause(ATTRIBUTE, key, op, 1.7e12)
    ]


def test_the_sql_maps_each_attribute_the_grammar_compares_with_numbers() -> None:
    # The grammar's numeric attributes and the SQL's numeric columns live in two modules.
    assert frozenset(search_sql._RUN_NUMERIC_ATTRIBUTES) == RUN_NUMERIC_ATTRIBUTES
    assert frozenset(NUMERIC_RUN_ATTRIBUTES) == RUN_NUMERIC_ATTRIBUTES
    assert set(STRING_RUN_ATTRIBUTES) <= set(search_sql._RUN_STRING_ATTRIBUTES)


@pytest.mark.parametrize("entity", [PARAM, TAG])
@pytest.mark.parametrize("op", sorted(STRING_OPS))
def test_params_and_tags_take_string_operators(entity: str, op: str) -> None:
    assert parse_filter(f"{entity}s.k {op} 'v%'") == [Clause(entity, "k", op, "v%")]


@pytest.mark.parametrize("entity", [PARAM, TAG])
@pytest.mark.parametrize("op", sorted(NULL_OPS))
def test_params_and_tags_take_null_tests(entity: str, op: str) -> None:
    assert parse_filter(f"{entity}s.k {op}") == [Clause(entity, "k", op, None)]


@pytest.mark.parametrize("op", sorted(STRING_OPS))
def test_string_attributes_take_string_operators(op: str) -> None:
    assert parse_filter(f"attributes.run_name {op} 'a'") == [Clause(ATTRIBUTE, "run_name", op, "a")]


@pytest.mark.parametrize("op", sorted(SET_OPS))
def test_run_id_takes_in_and_not_in(op: str) -> None:
    assert parse_filter(f"attributes.run_id {op} ('a', \"b\",'c')") == [
        Clause(ATTRIBUTE, "run_id", op, ("a", "b", "c"))
    ]


def test_in_with_one_item() -> None:
    assert parse_filter("run.run_id IN ('abc')") == [Clause(ATTRIBUTE, "run_id", "IN", ("abc",))]


@pytest.mark.parametrize("op", ["LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"])
def test_metrics_reject_non_numeric_operators(op: str) -> None:
    value = {"IN": " ('1')", "NOT IN": " ('1')", "IS NULL": "", "IS NOT NULL": ""}.get(op, " '1'")
    message = filter_error(f"metrics.acc {op}{value}", pos=0)
    assert f"{op} cannot compare metrics.acc" in message


@pytest.mark.parametrize("op", [">", ">=", "<", "<=", "IN", "NOT IN"])
@pytest.mark.parametrize("entity", [PARAM, TAG])
def test_params_and_tags_reject_ordering_and_sets(entity: str, op: str) -> None:
    value = "('a')" if op in SET_OPS else "'a'"
    message = filter_error(f"{entity}s.k {op} {value}", pos=0)
    assert f"{op} cannot compare {entity}s.k" in message


@pytest.mark.parametrize("text", ["attributes.start_time LIKE '1%'", "attr.created IN ('1')"])
def test_numeric_attributes_reject_string_operators(text: str) -> None:
    filter_error(text, pos=0)


@pytest.mark.parametrize(
    "text",
    ["attributes.status > 'a'", "attributes.status IS NULL", "attributes.run_id IS NOT NULL"],
)
def test_string_attributes_reject_ordering_and_null_tests(text: str) -> None:
    filter_error(text, pos=0)


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("metrics.acc = '0.9'", "compared with a number"),
        ("attributes.start_time > '5'", "compared with a number"),
        ("params.epochs = 10", "write '10'"),
        ("tags.v = 1.5", "write '1.5'"),
        ("attributes.status = 1", "compared with a quoted string"),
    ],
)
def test_value_type_must_match_the_entity(text: str, hint: str) -> None:
    assert hint in filter_error(text, pos=0)


# --- keywords, strings and numbers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "params.a = 'x' and params.b like 'y%'",
            [Clause(PARAM, "a", "=", "x"), Clause(PARAM, "b", "LIKE", "y%")],
        ),
        (
            "params.a iLiKe 'X' AnD tags.t is not null",
            [Clause(PARAM, "a", "ILIKE", "X"), Clause(TAG, "t", "IS NOT NULL", None)],
        ),
        ("tags.t Is  Null", [Clause(TAG, "t", "IS NULL", None)]),
        ("attr.run_id not   in ('a')", [Clause(ATTRIBUTE, "run_id", "NOT IN", ("a",))]),
        ("attr.run_id in ('a')", [Clause(ATTRIBUTE, "run_id", "IN", ("a",))]),
    ],
)
def test_keywords_are_case_insensitive(text: str, expected: list[Clause]) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("'it''s'", "it's"),
        ('"say ""hi"""', 'say "hi"'),
        ('"it\'s"', "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        ("''", ""),
        ("''''", "'"),
        ("'a AND params.b = ''c'''", "a AND params.b = 'c'"),
        ("'%_[*?'", "%_[*?"),
    ],
)
def test_string_literals(literal: str, value: str) -> None:
    # Doubled quotes stand for one quote (SQL). MLflow keeps them doubled (it only strips the
    # outer quotes): 'it''s' is "it''s" there, a value no run can have been logged with.
    assert parse_filter(f"params.p = {literal}") == [Clause(PARAM, "p", "=", value)]


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("1", 1.0),
        ("-1.5", -1.5),
        ("1e-3", 0.001),
        (".5", 0.5),
        ("-.5", -0.5),
        ("+2", 2.0),
        ("1E3", 1000.0),
        ("2.5e+2", 250.0),
        ("3.", 3.0),
        ("0", 0.0),
        ("1e999", float("inf")),
    ],
)
def test_numbers_in_every_form(literal: str, value: float) -> None:
    assert parse_filter(f"metrics.m = {literal}") == [Clause(METRIC, "m", "=", value)]
    assert parse_filter(f"metrics.m>{literal}") == [Clause(METRIC, "m", ">", value)]


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_no_filter_is_no_clauses(text: str | None) -> None:
    assert parse_filter(text) == []


def test_many_clauses() -> None:
    text = (
        "metrics.acc >= 0.9 AND params.model = 'rf' AND tags.`team name` LIKE 'ml%' "
        "AND attributes.start_time > 100 AND run.run_id NOT IN ('x', 'y')"
    )
    assert parse_filter(text) == [
        Clause(METRIC, "acc", ">=", 0.9),
        Clause(PARAM, "model", "=", "rf"),
        Clause(TAG, "team name", "LIKE", "ml%"),
        Clause(ATTRIBUTE, "start_time", ">", 100.0),
        Clause(ATTRIBUTE, "run_id", "NOT IN", ("x", "y")),
    ]


def test_numeric_attributes_follow_the_argument() -> None:
    # Experiments compare creation_time with numbers, and start_time is then just a string key.
    assert parse_filter("attributes.creation_time > 5", frozenset({"creation_time"})) == [
        Clause(ATTRIBUTE, "creation_time", ">", 5.0)
    ]
    filter_error("attributes.creation_time > 5")
    with pytest.raises(SearchError):
        parse_filter("attributes.start_time > 5", frozenset({"creation_time"}))


# --- datasets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["dataset", "datasets", "DATASETS"])
@pytest.mark.parametrize("key", ["name", "digest", "context"])
def test_dataset_fields_take_string_and_set_comparisons(alias: str, key: str) -> None:
    assert parse_filter(f"{alias}.{key} = 'iris' AND {alias}.`{key}` NOT IN ('a', 'b')") == [
        Clause(DATASET, key, "=", "iris"),
        Clause(DATASET, key, "NOT IN", ("a", "b")),
    ]
    for op in ("!=", "LIKE", "ILIKE"):
        assert parse_filter(f"{alias}.{key} {op} 'i%'") == [Clause(DATASET, key, op, "i%")]


def inputs(*datasets: tuple[str, str, str | None]) -> str:
    """An inputs tag as the server records runs/log-inputs: (name, digest, context) each."""
    return json.dumps(
        {
            "datasets": [
                {
                    "dataset": {"name": name, "digest": digest, "source_type": "local"},
                    "tags": []
                    if context is None
                    else [{"key": "mlflow.data.context", "value": context}],
                }
                for name, digest, context in datasets
            ]
        }
    )


RUN_INPUTS = [
    ("train", inputs(("iris", "d1", "training"), ("wine", "d2", "validation"))),
    ("eval", inputs(("Iris_v2", "d3", "evaluation"))),
    ("bare", inputs(("iris", "d1", None))),
    ("none", None),
    ("broken", "{not json"),
    ("odd", json.dumps({"datasets": [1, {"dataset": "x"}, {"dataset": {"name": 5}}]})),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("datasets.name = 'iris'", ["train", "bare"]),
        ("datasets.digest IN ('d2', 'd3')", ["train", "eval"]),
        ("datasets.context = 'training'", ["train"]),
        # As MLflow's join: a clause holds when one of the run's datasets satisfies it, and a
        # dataset without a context tag satisfies no context comparison.
        ("datasets.name != 'iris'", ["train", "eval"]),
        ("datasets.context NOT IN ('training')", ["train", "eval"]),
        ("datasets.name = 'iris' AND datasets.context = 'validation'", ["train"]),
        ("datasets.name LIKE 'iris%'", ["train", "bare"]),
        ("datasets.name LIKE 'I%'", ["eval"]),
        ("datasets.name ILIKE 'i%'", ["train", "eval", "bare"]),
        ("datasets.name LIKE 'Iris.v2'", []),
        ("datasets.name LIKE 'Iris_v_'", ["eval"]),
        ("datasets.digest = 'd1' AND params.x = 'y'", ["train", "bare"]),
    ],
)
def test_runs_matching_datasets(text: str, expected: list[str]) -> None:
    assert runs_matching_datasets(parse_filter(text), RUN_INPUTS) == expected


def test_dataset_refs_ignore_what_is_not_a_dataset() -> None:
    assert dataset_refs("{not json") == dataset_refs("[1]") == dataset_refs(None) == []
    [ref] = dataset_refs(RUN_INPUTS[-1][1])
    assert (ref.name, ref.digest, ref.context) == (None, None, None)


@pytest.mark.parametrize("dataset_runs", [[], ["r1"], ["r2", "r1", "r1"]])
def test_compiled_dataset_clauses_keep_the_matching_runs(dataset_runs: list[str]) -> None:
    sql = SqlBuilder("sqlite")
    clauses = parse_filter("datasets.name = 'iris' AND datasets.context = 'training'")
    [condition] = compile_runs_filter(clauses, sql, dataset_runs=dataset_runs)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE runs (run_uuid TEXT)")
    db.executemany("INSERT INTO runs VALUES (?)", [("r1",), ("r2",), ("r3",)])
    found = db.execute(f"SELECT run_uuid FROM runs r WHERE {condition}", sql.params).fetchall()
    assert sorted(r[0] for r in found) == sorted(set(dataset_runs))
    with pytest.raises(ValueError, match="need the runs"):
        compile_runs_filter(clauses, SqlBuilder("sqlite"))


# --- bad filters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pos", "fragment"),
    [
        ("metrics.acc >", 13, "expected a value, but the text ended"),
        ("metrics.acc > AND params.a = 'b'", 14, "expected a number or a quoted string"),
        ("params.model = rf", 15, "quote string values"),
        ("foo.acc > 1", 0, "unknown entity 'foo'"),
        ("dataset.size = 'x'", 0, "unknown dataset key 'size'"),
        ("datasets.name = 1", 0, "datasets.name is compared with a quoted string"),
        ("datasets.digest > 'a'", 0, "> cannot compare datasets.digest"),
        ("datasets.context IS NULL", 0, "IS NULL cannot compare datasets.context"),
        ("acc > 1", 0, "unknown entity 'acc'"),
        ("metrics > 1", 7, "expected '.'"),
        ("metrics. > 1", 9, "expected a key"),
        ('metrics."" > 1', 8, "the key is empty"),
        ("params.a = 'x' OR params.b = 'y'", 15, "OR is not supported"),
        ("params.a = 'x' or params.b = 'y'", 15, "OR is not supported"),
        ("metrics.acc LIKE '0.9%'", 0, "LIKE cannot compare metrics.acc"),
        ("metrics.acc > 1 extra", 16, "expected AND or the end"),
        ("metrics.acc > 1 )", 16, "expected AND or the end"),
        ("metrics.acc > 1 AND", 19, "but the text ended"),
        ("metrics.acc > 1; DROP TABLE runs", 15, "unexpected character ';'"),
        ("params.a = 'abc", 11, 'unexpected character "\'"'),
        ('params.a = "abc', 11, "unexpected character '\"'"),
        ("params.`a = 'b'", 7, "unexpected character '`'"),
        ("params.a = 'it''s", 15, "unexpected character"),  # 'it' closes, then 's is open
        ("attributes.run_id IN ()", 22, "expected a quoted string, got ')'"),
        ("attributes.run_id IN ('a',)", 26, "expected a quoted string, got ')'"),
        ("attributes.run_id IN ('a' 'b')", 26, "expected ',' or ')'"),
        ("attributes.run_id IN ('a'", 25, "but the text ended"),
        ("attributes.run_id IN (1)", 22, "expected a quoted string, got '1'"),
        ("attributes.run_id IN 'a'", 21, "needs a list in parentheses"),
        ("params.a IS 'x'", 12, "expected NULL or NOT NULL after IS"),
        ("params.a IS NOT", 15, "expected NULL after IS NOT"),
        ("params.a NOT 'x'", 9, "expected a comparison operator, got 'NOT'"),
        ("metrics.a == 1", 11, "expected a number or a quoted string, got '='"),
        ("metrics.a <> 1", 11, "expected a number or a quoted string, got '>'"),
        ("metrics.a 1", 10, "expected a comparison operator"),
        ("metrics.a > 1abc", 12, "unexpected character '1'"),
        ("metrics.a > - 1", 12, "unexpected character '-'"),
    ],
)
def test_bad_filters_point_at_the_problem(text: str, pos: int, fragment: str) -> None:
    message = filter_error(text, pos)
    assert message.startswith("Invalid filter: ")
    assert fragment in message


def test_caret_line_of_a_multiline_filter() -> None:
    text = "metrics.a > 1\nAND params.b = c"
    with pytest.raises(SearchError) as info:
        parse_filter(text)
    assert f"at position {text.rindex('c')}:" in str(info.value)
    assert text in str(info.value)


def test_search_errors_are_user_input_errors() -> None:
    with pytest.raises(UserInputError):
        parse_filter("metrics.acc LIKE 'x'")


# --- experiments --------------------------------------------------------------------------------


def test_experiment_filter_takes_a_bare_name() -> None:
    assert parse_experiment_filter("name LIKE 'iris%'") == [
        Clause(ATTRIBUTE, "name", "LIKE", "iris%")
    ]


def test_experiment_filter_bare_name_after_another_clause() -> None:
    # Regression: only a bare name at the very start was recognised (MLflow accepts both).
    assert parse_experiment_filter("tags.x = 'a' AND name = 'b'") == [
        Clause(TAG, "x", "=", "a"),
        Clause(ATTRIBUTE, "name", "=", "b"),
    ]


@pytest.mark.parametrize("value", ["Q AND name", "name", "x and name = 1"])
def test_experiment_filter_leaves_string_values_alone(value: str) -> None:
    # Regression: the bare-name rewrite ran over the whole text, values included.
    assert parse_experiment_filter(f"name = '{value}'") == [Clause(ATTRIBUTE, "name", "=", value)]


def test_experiment_filter_times_are_integers_when_integral() -> None:
    [clause] = parse_experiment_filter("creation_time >= 1700000000000")
    assert clause == Clause(ATTRIBUTE, "creation_time", ">=", 1700000000000)
    assert type(clause.value) is int
    assert parse_experiment_filter("attributes.last_update_time < 5 AND name != 'x'") == [
        Clause(ATTRIBUTE, "last_update_time", "<", 5),
        Clause(ATTRIBUTE, "name", "!=", "x"),
    ]


@pytest.mark.parametrize(("literal", "value"), [("1.5", 1.5), ("1e999", float("inf"))])
def test_experiment_filter_keeps_fractional_and_huge_times(literal: str, value: float) -> None:
    # Regression: creation_time = 1.5 became = 1 (a different filter), 1e999 an OverflowError.
    assert parse_experiment_filter(f"creation_time = {literal}") == [
        Clause(ATTRIBUTE, "creation_time", "=", value)
    ]


@pytest.mark.parametrize(
    ("text", "pos"),
    [
        ("name.x = 'a'", 0),
        ("NAME = 'a'", 0),
        ("creation_time > 'x'", 0),
        ("name = 'a' OR name = 'b'", 11),
    ],
)
def test_bad_experiment_filters(text: str, pos: int) -> None:
    search_error(parse_experiment_filter, text, pos)


def test_run_filters_do_not_take_bare_names() -> None:
    assert "unknown entity 'name'" in filter_error("name = 'a'", pos=0)


# --- compiling numeric attributes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("attributes.start_time < 1.5", True),
        ("attributes.start_time = 1", True),
        ("attributes.start_time > 0.5", True),
        ("attributes.start_time > 1", False),
        ("attributes.created < 1e999", True),
        ("attributes.end_time > -1e999", True),
    ],
)
def test_compiled_time_comparisons_are_exact(text: str, matches: bool) -> None:
    # Regression: a fractional time was truncated (start_time < 1.5 became < 1) and an infinite
    # one raised OverflowError.
    sql = SqlBuilder("sqlite")
    [condition] = compile_runs_filter(parse_filter(text), sql)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE runs (run_uuid TEXT, start_time INTEGER, end_time INTEGER)")
    db.execute("INSERT INTO runs VALUES ('r1', 1, 1)")
    found = db.execute(f"SELECT run_uuid FROM runs r WHERE {condition}", sql.params).fetchall()
    assert (found == [("r1",)]) is matches


def test_compiled_integral_times_bind_integers() -> None:
    sql = SqlBuilder("sqlite")
    compile_runs_filter(parse_filter("attributes.start_time >= 1700000000000"), sql)
    assert list(sql.params.values()) == [1700000000000]
    assert type(sql.params["q0"]) is int


# --- order_by -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("metrics.acc DESC", OrderBy(METRIC, "acc", False)),
        ("metrics.acc", OrderBy(METRIC, "acc", True)),
        ("params.lr asc", OrderBy(PARAM, "lr", True)),
        ("tags.`a b` desc", OrderBy(TAG, "a b", False)),
        ('metrics."val.acc" DESC', OrderBy(METRIC, "val.acc", False)),
        ("metrics.val.acc", OrderBy(METRIC, "val.acc", True)),
        ("attributes.start_time DESC", OrderBy(ATTRIBUTE, "start_time", False)),
        ("start_time DESC", OrderBy(ATTRIBUTE, "start_time", False)),
        ("run_name", OrderBy(ATTRIBUTE, "run_name", True)),
        ('attr."run name" ASC', OrderBy(ATTRIBUTE, "run name", True)),
    ],
)
def test_order_by(item: str, expected: OrderBy) -> None:
    assert parse_order_by([item], RUN_ORDER_ATTRIBUTES) == [expected]


def test_order_by_several_and_none() -> None:
    assert parse_order_by(None, RUN_ORDER_ATTRIBUTES) == []
    assert parse_order_by([], RUN_ORDER_ATTRIBUTES) == []
    assert parse_order_by(["metrics.a", "start_time DESC"], RUN_ORDER_ATTRIBUTES) == [
        OrderBy(METRIC, "a", True),
        OrderBy(ATTRIBUTE, "start_time", False),
    ]


@pytest.mark.parametrize(
    ("item", "pos", "fragment"),
    [
        ("", 0, "empty order_by clause"),
        ("   ", 3, "empty order_by clause"),
        ("metrics.acc SIDEWAYS", 12, "expected ASC, DESC"),
        ("metrics.acc DESC ASC", 17, "expected ASC, DESC"),
        ("attributes.lifecycle_stage", 0, "cannot order by attribute 'lifecycle_stage'"),
        ("bogus DESC", 0, "cannot order by attribute 'bogus'"),
        ("foo.acc", 0, "unknown entity 'foo'"),
        ("datasets.name", 0, "cannot order by a dataset"),
        ("metrics.", 8, "but the text ended"),
        ("metrics.acc;", 11, "unexpected character ';'"),
    ],
)
def test_bad_order_by(item: str, pos: int, fragment: str) -> None:
    message = search_error(lambda text: parse_order_by([text], RUN_ORDER_ATTRIBUTES), item, pos)
    assert message.startswith("Invalid order_by: ")
    assert fragment in message


# --- page tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1, 100, 2**62 - 1])
def test_page_token_round_trip(offset: int) -> None:
    token = encode_page_token(offset)
    assert json.loads(base64.b64decode(token)) == {"offset": offset}  # MLflow's format
    assert decode_page_token(token) == offset


@pytest.mark.parametrize("token", [None, ""])
def test_no_page_token_is_the_first_page(token: str | None) -> None:
    assert decode_page_token(token) == 0


def test_page_token_offset_given_as_a_string() -> None:
    assert decode_page_token(b64('{"offset": "7"}')) == 7


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("not base64!!", "Invalid page token 'not base64!!'"),
        ("abc", "Invalid page token 'abc'"),
        ("é", "Invalid page token 'é'"),
        (b64("not json"), "Invalid page token"),
        (base64.b64encode(b"\xff\xfe").decode(), "Invalid page token"),
        (b64('{"offset": -1}'), "out of range"),
        (b64('{"offset": -5}'), "out of range"),
        (b64('{"offset": 99999999999999999999}'), "out of range"),
        (b64('{"page": 1}'), "'offset'"),
        (b64("[1, 2]"), "Invalid page token"),
        (b64("7"), "Invalid page token"),
        (b64('{"offset": "ten"}'), "Invalid page token"),
        (b64('{"offset": null}'), "Invalid page token"),
        (b64('{"offset": NaN}'), "Invalid page token"),
        (b64('{"offset": Infinity}'), "Invalid page token"),  # regression: OverflowError
        (b64('{"offset": 1e400}'), "Invalid page token"),  # regression: OverflowError
        (b64("[" * 100_000), "Invalid page token"),  # regression: RecursionError
    ],
)
def test_bad_page_tokens(token: str, fragment: str) -> None:
    with pytest.raises(SearchError) as info:
        decode_page_token(token)
    message = str(info.value)
    assert fragment in message
    assert repr(token) in message


# --- LIKE as SQLite GLOB ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("like", "glob"),
    [
        ("abc", "abc"),
        ("a%", "a*"),
        ("_b_", "?b?"),
        ("a*b?c", "a[*]b[?]c"),
        ("[x]", "[[]x]"),
        ("%[%]%", "*[[]*]*"),
    ],
)
def test_like_to_glob(like: str, glob: str) -> None:
    assert _like_to_glob(like) == glob


def like_matches(value: str, pattern: str) -> bool:
    """Case-sensitive LIKE without ESCAPE, as MLflow's file store evaluates it."""
    regex = "".join({"%": ".*", "_": "."}.get(ch, re.escape(ch)) for ch in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


GLOB_ALPHABET = st.sampled_from("aAb%_*?[]^!-\\\né")


@PROPERTY
@given(st.text(GLOB_ALPHABET, max_size=8), st.text(GLOB_ALPHABET, max_size=6))
def test_glob_matches_like(value: str, pattern: str) -> None:
    db = sqlite3.connect(":memory:")
    [(found,)] = db.execute("SELECT ? GLOB ?", (value, _like_to_glob(pattern))).fetchall()
    assert bool(found) == like_matches(value, pattern)


# --- property: generated clauses round-trip -----------------------------------------------------

PLAIN_KEY = st.from_regex(
    r"[A-Za-z_][A-Za-z0-9_]{0,6}(\.[A-Za-z_][A-Za-z0-9_]{0,6}){0,2}", fullmatch=True
)
ANY_KEY = st.text(min_size=1, max_size=8)


def cased(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(ch.upper() if up else ch.lower() for ch, up in zip(word, flips, strict=True))


def quoted(draw: st.DrawFn, text: str, quotes: str = "'\"") -> str:
    quote = draw(st.sampled_from(quotes))
    return quote + text.replace(quote, quote * 2) + quote


def render_key(draw: st.DrawFn, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key, flags=re.ASCII) and draw(st.booleans()):
        return key
    if "`" not in key and draw(st.booleans()):
        return f"`{key}`"
    return quoted(draw, key)


@st.composite
def number_literal(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["", "-", "+"]))
    digits = st.from_regex(r"[0-9]{1,6}", fullmatch=True)
    form = draw(st.sampled_from(["int", "decimal", "leading-dot", "exponent", "repr"]))
    if form == "int":
        return sign + draw(digits)
    if form == "decimal":
        return f"{sign}{draw(digits)}.{draw(st.from_regex(r'[0-9]{0,4}', fullmatch=True))}"
    if form == "leading-dot":
        return f"{sign}.{draw(digits)}"
    if form == "exponent":
        e = draw(st.sampled_from("eE")) + draw(st.sampled_from(["", "-", "+"]))
        return f"{sign}{draw(digits)}{e}{draw(st.integers(0, 30))}"
    return repr(draw(st.floats(allow_nan=False, allow_infinity=False)))


@st.composite
def generated_clause(draw: st.DrawFn) -> tuple[Clause, list[str]]:
    """A valid clause and the tokens of one way to write it."""
    entity = draw(st.sampled_from([METRIC, PARAM, TAG, ATTRIBUTE]))
    if entity == ATTRIBUTE:
        key = draw(st.sampled_from(NUMERIC_RUN_ATTRIBUTES + STRING_RUN_ATTRIBUTES))
        numeric = key in NUMERIC_RUN_ATTRIBUTES
    else:
        key = draw(st.one_of(PLAIN_KEY, ANY_KEY))
        numeric = entity == METRIC
    if numeric:
        ops = NUMERIC_OPS
    elif entity == ATTRIBUTE:
        ops = STRING_OPS | SET_OPS
    else:
        ops = STRING_OPS | NULL_OPS
    op = draw(st.sampled_from(sorted(ops)))
    ident = draw(st.sampled_from(ALIASES[entity])) + "." + render_key(draw, key)
    tokens = [ident, *(cased(draw, word) for word in op.split())]
    value: float | str | tuple[str, ...] | None
    if op in NULL_OPS:
        value = None
    elif numeric:
        literal = draw(number_literal())
        value = float(literal)
        tokens.append(literal)
    elif op in SET_OPS:
        value = tuple(draw(st.lists(st.text(max_size=5), min_size=1, max_size=4)))
        items = [quoted(draw, item) for item in value]
        listed = items[:1]
        for item in items[1:]:
            listed += [",", item]
        tokens += ["(", *listed, ")"]
    else:
        value = draw(st.text(max_size=10))
        tokens.append(quoted(draw, value))
    return Clause(entity, key, op, value), tokens


def join_tokens(draw: st.DrawFn, tokens: list[str]) -> str:
    """Tokens separated by random whitespace; none only where the tokens cannot run together."""
    out = draw(st.text(" \t\n", max_size=2))
    for left, right in pairwise(tokens):
        glued = re.match(r"[\w.]", left[-1]) and re.match(r"[\w.+-]", right[0])
        out += left + draw(st.text(" \t\n\r", min_size=1 if glued else 0, max_size=3))
    return out + tokens[-1] + draw(st.text(" \t\n", max_size=2))


@st.composite
def generated_filter(draw: st.DrawFn) -> tuple[list[Clause], str]:
    generated = draw(st.lists(generated_clause(), min_size=1, max_size=5))
    tokens: list[str] = []
    for n, (_, clause_tokens) in enumerate(generated):
        if n:
            tokens.append(cased(draw, "AND"))
        tokens += clause_tokens
    return [clause for clause, _ in generated], join_tokens(draw, tokens)


@PROPERTY
@given(generated_filter())
def test_generated_filters_parse_to_their_clauses(generated: tuple[list[Clause], str]) -> None:
    clauses, text = generated
    assert parse_filter(text) == clauses


# --- property: arbitrary text fails only with SearchError ----------------------------------------

# fmt: off
FRAGMENTS = st.sampled_from(
    [
        "metrics", "params", "tags", "attributes", "run", "name", ".", "a", "b.c", "start_time",
        "creation_time", "run_id", "'x'", "'it''s'", '"q"', "`k`", "'", '"', "`", "(", ")", ",", "AND", "OR",
        "IN", "NOT", "IS", "NULL", "LIKE", "ilike", "=", "!=", ">", ">=", "<", "<=", "==",
        "1", "-1.5", ".5", "1e3", "1e999", " ", "  ", "\n", "DESC", "asc", "é", ";", "\x00",
    ]
)
CLAUSE_LIKE = st.tuples(
    st.sampled_from(
        [
            "metrics.a", "params.b", "tags.c", "attributes.run_id", "run.status", "start_time",
            "attributes.start_time", "creation_time", "attributes.last_update_time", "name",
            "metrics.a.b", 'metrics."a b"', "tags.`k`", "params.x. y",
        ]
    ),
    st.sampled_from(sorted(ALL_OPS | {"==", "<>", "IS", "NOT"})),
    st.sampled_from(["'x'", '"y"', "1", "-1.5", ".5", "1e999", "('a', 'b')", "()", "", "x"]),
).map(" ".join)
# fmt: on
GRAMMARISH = st.one_of(
    st.lists(FRAGMENTS, max_size=14).map("".join),
    st.lists(CLAUSE_LIKE | FRAGMENTS, min_size=1, max_size=5).map(" AND ".join),
    st.lists(CLAUSE_LIKE | FRAGMENTS, min_size=1, max_size=5).map(" ".join),
)


def check_clauses(clauses: list[Clause], numeric: frozenset[str]) -> None:
    """What every parsed clause must satisfy, whatever text it came from."""
    for c in clauses:
        assert c.key
        assert c.op in ALL_OPS
        if c.entity == METRIC or (c.entity == ATTRIBUTE and c.key.lower() in numeric):
            assert c.op in NUMERIC_OPS
            assert isinstance(c.value, (float, int))
        elif c.entity in (PARAM, TAG):
            assert c.op in STRING_OPS | NULL_OPS
            assert c.value is None if c.op in NULL_OPS else isinstance(c.value, str)
        else:
            assert c.entity == ATTRIBUTE
            assert c.op in STRING_OPS | SET_OPS
            if c.op in SET_OPS:
                assert isinstance(c.value, tuple)
                assert c.value
                assert all(isinstance(v, str) for v in c.value)
            else:
                assert isinstance(c.value, str)


@PROPERTY
@given(st.one_of(st.text(), GRAMMARISH))
def test_any_filter_text_parses_or_raises_search_error(text: str) -> None:
    try:
        clauses = parse_filter(text)
    except SearchError as exc:
        assert text in str(exc)
    else:
        check_clauses(clauses, frozenset(NUMERIC_RUN_ATTRIBUTES))


@PROPERTY
@given(st.one_of(st.text(), GRAMMARISH))
def test_any_experiment_filter_text_parses_or_raises_search_error(text: str) -> None:
    try:
        clauses = parse_experiment_filter(text)
    except SearchError as exc:
        assert text in str(exc)
    else:
        check_clauses(clauses, frozenset({"creation_time", "last_update_time"}))


@PROPERTY
@given(st.lists(st.one_of(st.text(), GRAMMARISH), max_size=3))
def test_any_order_by_text_parses_or_raises_search_error(items: list[str]) -> None:
    try:
        order = parse_order_by(items, RUN_ORDER_ATTRIBUTES)
    except SearchError as exc:
        assert any(item in str(exc) for item in items)
    else:
        assert len(order) == len(items)
        for o in order:
            assert o.entity in (METRIC, PARAM, TAG, ATTRIBUTE)
            assert o.entity != ATTRIBUTE or o.key.lower() in RUN_ORDER_ATTRIBUTES


@PROPERTY
@given(
    st.one_of(
        st.text(),
        st.text().map(b64),
        st.dictionaries(st.sampled_from(["offset", "x"]), st.integers() | st.text()).map(
            lambda d: b64(json.dumps(d))
        ),
        st.one_of(st.integers(), st.floats(), st.text(), st.none(), st.booleans()).map(
            lambda v: b64(json.dumps({"offset": v}))
        ),
    )
)
def test_any_page_token_decodes_or_raises_search_error(token: str) -> None:
    try:
        offset = decode_page_token(token)
    except SearchError as exc:
        assert repr(token) in str(exc)
    else:
        assert isinstance(offset, int)
        assert offset >= 0


# --- property: page tokens and order_by round-trip ----------------------------------------------


@PROPERTY
@given(st.integers(min_value=0, max_value=2**62 - 1))
def test_page_tokens_round_trip(offset: int) -> None:
    assert decode_page_token(encode_page_token(offset)) == offset


@PROPERTY
@given(st.integers(max_value=-1))
def test_negative_page_tokens_are_refused(offset: int) -> None:
    with pytest.raises(SearchError, match="out of range"):
        decode_page_token(encode_page_token(offset))


@st.composite
def generated_order_by(draw: st.DrawFn) -> tuple[OrderBy, str]:
    entity = draw(st.sampled_from([METRIC, PARAM, TAG, ATTRIBUTE]))
    if entity == ATTRIBUTE:
        key = draw(st.sampled_from(sorted(RUN_ORDER_ATTRIBUTES)))
    else:
        key = draw(st.one_of(PLAIN_KEY, ANY_KEY))
    rendered = render_key(draw, key)
    if entity == ATTRIBUTE and rendered == key and draw(st.booleans()):
        ident = key  # a bare attribute name
    else:
        ident = draw(st.sampled_from(ALIASES[entity])) + "." + rendered
    direction = draw(st.sampled_from(["", "ASC", "DESC"]))
    tokens = [ident, cased(draw, direction)] if direction else [ident]
    return OrderBy(entity, key, direction != "DESC"), join_tokens(draw, tokens)


@PROPERTY
@given(st.lists(generated_order_by(), max_size=4))
def test_order_by_round_trip(generated: list[tuple[OrderBy, str]]) -> None:
    assert parse_order_by([text for _, text in generated], RUN_ORDER_ATTRIBUTES) == [
        order for order, _ in generated
    ]
