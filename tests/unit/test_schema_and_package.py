"""Things that must not drift: the generated SQLite DDL, exported names, lazy imports, --help."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import click
import pytest
from click.testing import CliRunner

import reprorun
from reprorun.cli import cli
from reprorun.tracking.store import schema


def test_sqlite_ddl_is_generated_from_the_sqlalchemy_schema() -> None:
    stored = (
        resources.files("reprorun.tracking.store").joinpath("schema_sqlite.sql").read_text("utf-8")
    )
    assert stored == schema.sqlite_ddl(), (
        "schema_sqlite.sql is stale: python -m reprorun.tracking.store.schema > "
        "src/reprorun/tracking/store/schema_sqlite.sql"
    )


def test_all_lists_exactly_the_public_names() -> None:
    # Every lazily exported name is in __all__ and nothing else is (httpx's check).
    assert sorted(reprorun.__all__) == sorted(
        [*reprorun._LAZY, *reprorun._SUBPACKAGES, "__version__"]
    )
    assert dir(reprorun) == sorted(reprorun.__all__)
    for name in reprorun.__all__:
        assert getattr(reprorun, name) is not None


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


HEAVY = {"sqlalchemy", "yaml", "rich", "sklearn", "numpy"}


def test_help_and_user_import_stay_light() -> None:
    loaded = _modules_after(
        "from reprorun.cli import cli\ntry:\n    cli(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert not HEAVY & loaded
    assert not HEAVY & _modules_after("import reprorun")


def test_the_run_path_does_not_import_sqlalchemy() -> None:
    loaded = _modules_after(
        "import reprorun.projects.launch, reprorun.tracking.store as s, reprorun.backends.local\n"
        "import reprorun.tracking.fluent"
    )
    assert "sqlalchemy" not in loaded and "rich" not in loaded


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(_all_commands(command, (*prefix, name)))
    return found


@pytest.mark.parametrize("path", _all_commands(cli), ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
