"""A run's dataset inputs as ``datasets.name``, ``datasets.digest`` and ``datasets.context``
(the ``mlflow.data.context`` tag of the input) filters see them.

The store keeps a run's inputs as JSON in the run tag ``INPUTS_TAG``; a clause holds when one of
the run's datasets satisfies it (as MLflow's join). The store reads those tags and matches them
here, in Python (``runs_matching_datasets``): a JSON tag any client may have set to anything
cannot break the query, on SQLite or PostgreSQL alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reprorun.tracking.search.grammar import DATASET, SET_OPS, Clause

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
