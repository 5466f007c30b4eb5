"""Parsing for `reprorun log metric -` lines and `reprorun param` values."""

from __future__ import annotations

import math
import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reprorun.errors import UserInputError
from reprorun.tracking.external import check_type, parse_metric_line, parse_number

keys = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="_-./"),
    min_size=1,
    max_size=40,
).filter(lambda k: not k.startswith("#") and posixpath.normpath(k) == k and k[0] not in "./")


@given(
    key=keys,
    value=st.floats(allow_nan=True, allow_infinity=True),
    step=st.integers(-(2**62), 2**62),
    stamp=st.integers(0, 2**62),
)
def test_a_metric_line_round_trips(key: str, value: float, step: int, stamp: int) -> None:
    metric = parse_metric_line(f"{key} {value!r} {step} {stamp}\n", 1, None)
    assert metric is not None
    assert (metric.key, metric.step, metric.timestamp) == (key, step, stamp)
    assert metric.value == value or (math.isnan(value) and math.isnan(metric.value))


@given(line=st.text(max_size=80))
def test_any_line_is_a_metric_none_or_a_clear_error(line: str) -> None:
    try:
        parse_metric_line(line, 7, None)
    except UserInputError as exc:
        assert "line 7" in str(exc) or "must be a number" in str(exc)


def test_metric_lines_defaults_comments_and_errors() -> None:
    metric = parse_metric_line("loss 0.5", 1, 4)
    assert metric is not None and (metric.value, metric.step) == (0.5, 4)
    assert parse_metric_line("   ", 2, None) is None
    assert parse_metric_line("# epoch 3", 3, None) is None
    with pytest.raises(UserInputError, match="line 4: expected `KEY VALUE"):
        parse_metric_line("loss", 4, None)
    with pytest.raises(UserInputError, match="'loss' must be a number, got 'high'"):
        parse_metric_line("loss high", 5, None)
    with pytest.raises(UserInputError, match="line 6: STEP and TIMESTAMP must be integers"):
        parse_metric_line("loss 1 2.5", 6, None)
    with pytest.raises(UserInputError, match=r"line 7: Invalid metric key '\.\./x'"):
        parse_metric_line("../x 1", 7, None)
    with pytest.raises(UserInputError, match=r"line 8: .* 64-bit"):
        parse_metric_line(f"loss 1 {2**70}", 8, None)
    assert math.isnan(parse_number("x", "nan")) and parse_number("x", "-inf") == -math.inf


@pytest.mark.parametrize(
    ("type_name", "good", "bad", "expected"),
    [
        ("float", "0.02", "abc", "expected a float"),
        ("int", "5", "5.5", "expected an integer"),
        ("bool", "true", "maybe", "expected true or false"),
    ],
)
def test_param_types(type_name: str, good: str, bad: str, expected: str) -> None:
    check_type("cp", good, type_name)
    with pytest.raises(UserInputError, match=f"Parameter 'cp': {expected}"):
        check_type("cp", bad, type_name)
    check_type("cp", "anything at all", "string")
