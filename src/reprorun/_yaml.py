"""YAML whose mappings remember their lines, for errors that name the file and the line.

A leaf: shared by every spec file reprorun reads (MLproject, python_env.yaml, conda.yaml) in
the projects and environments layers alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from reprorun.errors import SpecError


class LineDict(dict[Any, Any]):
    """A mapping that remembers the line of itself and of each key (1-based)."""

    line: int
    key_lines: dict[Any, int]


class _LineLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (the C one when available) whose mappings remember their lines."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise SpecError(
                "mapping keys must be plain values", line=key_node.start_mark.line + 1
            ) from None
        if key in result:
            raise SpecError(
                f"duplicate key {key!r} (first at line {result.key_lines[key]})",
                line=key_node.start_mark.line + 1,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def line_of(mapping: Any, key: Any) -> int | None:
    """The line of ``key`` in a mapping from ``load_yaml`` (else the mapping's own line)."""
    if isinstance(mapping, LineDict):
        return mapping.key_lines.get(key, mapping.line)
    return None


def load_yaml(text: str, path: Path) -> Any:
    """YAML whose mappings remember their lines (see ``line_of``); syntax errors and duplicate
    keys become a SpecError naming ``path`` and the line. Shared by every spec file reprorun
    reads (MLproject, python_env.yaml, conda.yaml)."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or str(exc)
        raise SpecError(f"YAML syntax error: {problem}", path, line) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", path) from exc
    except SpecError as exc:
        raise SpecError(exc.message, path, exc.line) from exc
