"""format_filter writes what parse_filter reads back: programs search without hand-made filters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reprorun.tracking.search import ATTRIBUTE, PARAM, TAG, Clause, format_filter, parse_filter

texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(key=texts, value=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_any_tag_and_value_read_back(key: str, value: str) -> None:
    clauses = [Clause(TAG, key, "=", value), Clause(PARAM, key, "!=", value)]
    assert parse_filter(format_filter(clauses)) == clauses


def test_the_forms_a_program_needs() -> None:
    clauses = [
        Clause(TAG, "reprorun.fingerprint", "=", "ab'c"),
        Clause(ATTRIBUTE, "status", "=", "FINISHED"),
        Clause(TAG, 'a`b"c', "LIKE", "x%"),
        Clause(ATTRIBUTE, "run_id", "IN", ("x", "y'z")),
        Clause(TAG, "gone", "IS NULL", None),
    ]
    text = format_filter(clauses)
    assert text.startswith("tags.`reprorun.fingerprint` = 'ab''c' and attributes.status = ")
    assert parse_filter(text) == clauses
