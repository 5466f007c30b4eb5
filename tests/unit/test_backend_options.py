"""Backend options: unknown keys and wrong types are refused naming the key, before anything
is submitted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reprorun.backends.base import parse_options
from reprorun.backends.registry import get_backend
from reprorun.errors import UnknownNameError, UserInputError


@dataclass(frozen=True)
class Options:
    address: str
    num_cpus: float | None = None
    nodes: int = 1
    exclusive: bool = False
    lines: list[str] = field(default_factory=list)
    env_vars: dict[str, str] = field(default_factory=dict)
    context: str | None = field(default=None, metadata={"key": "kube-context"})


def test_valid_options_are_built() -> None:
    got = parse_options(
        "demo",
        Options,
        {
            "address": "x",
            "num_cpus": 2,
            "lines": ["a"],
            "env_vars": {"A": "1"},
            "kube-context": "c",
        },
    )
    assert got == Options("x", num_cpus=2, lines=["a"], env_vars={"A": "1"}, context="c")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"address": "x", "adress": "y"},
            "'adress' is not an option of the demo backend. Did you mean 'address'?",
        ),
        ({"address": "x", "kube_context": "c"}, "Did you mean 'kube-context'?"),
        ({"address": 3}, "option 'address' of the demo backend must be a string, got 3 (int)"),
        (
            {"address": "x", "nodes": "2"},
            "'nodes' of the demo backend must be an integer, got '2' (str)",
        ),
        ({"address": "x", "nodes": True}, "must be an integer, got True (bool)"),
        ({"address": "x", "num_cpus": "many"}, "'num_cpus' of the demo backend must be a number"),
        ({"address": "x", "exclusive": "yes"}, "must be true or false, got 'yes'"),
        ({"address": "x", "lines": "#SBATCH -x"}, "must be a list of strings, got"),
        (
            {"address": "x", "env_vars": {"A": 1}},
            "'env_vars' of the demo backend must be a mapping of names to strings",
        ),
        ({}, "the demo backend needs option(s) 'address'"),
    ],
)
def test_bad_options_are_named(data: dict[str, Any], message: str) -> None:
    with pytest.raises(UserInputError) as excinfo:
        parse_options("demo", Options, data, "cluster.yaml")
    assert str(excinfo.value).startswith("Backend config cluster.yaml: ")
    assert message in str(excinfo.value)


@given(st.dictionaries(st.text(min_size=1, max_size=12), st.integers() | st.text(max_size=5)))
def test_any_mapping_is_either_accepted_or_refused_cleanly(data: dict[str, Any]) -> None:
    try:
        got = parse_options("demo", Options, {"address": "x", **data})
    except UserInputError as exc:
        assert "Backend config" in str(exc)
    else:
        assert got.address == data.get("address", "x")


def test_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="databricks, kubernetes, local, ray, slurm"):
        get_backend("yarn")


def test_local_grace_must_not_be_negative() -> None:
    with pytest.raises(UserInputError, match="stop_grace_seconds must be a number >= 0"):
        get_backend("local", {"stop_grace_seconds": -1})
