"""The application object: settings, one store opened on first use, the registries and what
each backend declares, and the CLI building one per invocation on click's context."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from reprorun.app import Capabilities, Reprorun
from reprorun.cli import cli
from reprorun.config import SETTINGS
from tests.conftest import REPO_ROOT


def test_the_store_is_opened_once_on_first_use(app: Reprorun, home: Path) -> None:
    assert app._stores == {}  # building the application opens nothing
    store = app.store
    assert app.store is store and app.store_at(None) is store
    assert app.tracking().sqlite_path == str(home / "store.db")
    assert store.list_experiments()[0].name == "Default"


def test_a_command_store_is_the_one_it_names(app: Reprorun, tmp_path: Path) -> None:
    other = app.store_at(str(tmp_path / "other.db"))
    assert other is not app.store
    assert other is app.store_at(str(tmp_path / "other.db"))


def test_importing_the_application_opens_no_store_module() -> None:
    code = "import sys, reprorun.app; print(any(m.startswith('reprorun.tracking') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_settings_come_from_settings(app: Reprorun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRORUN_EXPERIMENT_NAME", "tune")
    assert set(app.settings) == {s.name for s in SETTINGS}
    assert app.settings["experiment_name"] == "tune"
    assert app.settings["server_token"] is None


def test_no_module_but_config_reads_a_setting_variable() -> None:
    variables = "|".join(re.escape(s.env) for s in SETTINGS)
    read = re.compile(rf"environ(\.get\(|\[)\s*[\"']({variables})[\"']")
    readers = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "src" / "reprorun").rglob("*.py")
        if path.name != "config.py"
        and "clients" not in path.parts
        and read.search(path.read_text())
    ]
    assert readers == []


def test_registries_and_capabilities(app: Reprorun) -> None:
    assert {"local", "ray", "slurm", "kubernetes", "databricks"} <= set(app.backend_names())
    assert {"local", "uv", "virtualenv", "conda", "docker"} <= set(app.env_manager_names())
    assert app.env_manager("uv").name == "uv"
    local = app.capabilities("local")
    assert local == Capabilities(
        remote=False, shares_filesystem=True, tracking_uri=None, follows_runs=True
    )
    from reprorun.backends.ray.backend import RayBackend

    ray = Capabilities.of(RayBackend)
    assert ray.remote and ray.follows_runs


def test_the_cli_works_on_the_application_it_is_given(tmp_path: Path) -> None:
    given = Reprorun(str(tmp_path / "given.db"))
    given.store.create_experiment("only-in-given")
    done = CliRunner().invoke(cli, ["experiments", "list", "--json"], obj=given)
    assert done.exit_code == 0, done.output
    assert "only-in-given" in [e["name"] for e in json.loads(done.output)]


def test_the_cli_builds_one_application_per_invocation() -> None:
    import click

    from reprorun.cli._common import current_app

    seen: list[Reprorun] = []

    @click.command()
    def probe() -> None:
        seen.extend([current_app(), current_app()])

    cli.add_command(probe, "probe-app")
    try:
        assert CliRunner().invoke(cli, ["probe-app"]).exit_code == 0
        assert CliRunner().invoke(cli, ["probe-app"]).exit_code == 0
    finally:
        cli.commands.pop("probe-app")
    assert seen[0] is seen[1] and seen[2] is seen[3] and seen[0] is not seen[2]
