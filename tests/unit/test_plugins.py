"""Backends and environment managers are found by entry points; the built-in ones too, with a
static table of their names as the fast path (reading entry points costs milliseconds)."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
import tomllib

from reprorun import _plugins
from reprorun.backends.local import LocalBackend
from reprorun.backends.registry import backend_names, get_backend
from reprorun.envs.local import LocalEnvManager
from reprorun.envs.registry import env_manager_names, get_env_manager
from reprorun.errors import ExecutionError, UnknownNameError

ROOT = Path(__file__).resolve().parents[2]


def test_the_static_table_is_what_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert {group: dict(names) for group, names in _plugins.BUILTIN.items()} == declared


def test_the_installed_entry_points_are_the_static_table() -> None:
    """The editable install is current (pip install -e . after editing the entry points)."""
    for group, table in _plugins.BUILTIN.items():
        found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=group)}
        assert found == dict(table)


def test_built_in_names_never_read_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(**_kw: object) -> None:
        raise AssertionError("entry points read for a built-in name")

    monkeypatch.setattr(importlib.metadata, "entry_points", fail)
    assert isinstance(get_backend(None), LocalBackend)
    assert isinstance(get_backend("LOCAL", {"stop_grace_seconds": 1}), LocalBackend)
    assert isinstance(get_env_manager("local"), LocalEnvManager)


def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_points: str, module: str) -> None:
    """An installed distribution 'demo-plugin' (a dist-info folder on sys.path)."""
    (tmp_path / "demo_plugin.py").write_text(module)
    info = tmp_path / "demo_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "demo_plugin", raising=False)  # another test's


MODULE = """
from reprorun.backends.local import LocalBackend
from reprorun.envs.local import LocalEnvManager


def create(config, source):
    backend = LocalBackend()
    backend.name = "demo"
    backend.given = (dict(config), source)
    return backend


class DemoEnvManager(LocalEnvManager):
    name = "demo-env"
"""


def test_a_plugin_registers_a_backend_and_an_env_manager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin(
        tmp_path,
        monkeypatch,
        "[reprorun.backends]\ndemo = demo_plugin:create\n\n"
        "[reprorun.env_managers]\ndemo-env = demo_plugin:DemoEnvManager\n",
        MODULE,
    )
    backend = get_backend("demo", {"x": 1}, "demo.json")
    assert backend.name == "demo" and backend.given == ({"x": 1}, "demo.json")  # type: ignore[attr-defined]
    assert get_env_manager("demo-env").name == "demo-env"
    assert backend_names() == ["databricks", "demo", "kubernetes", "local", "ray", "slurm"]
    assert env_manager_names() == ["conda", "demo-env", "docker", "local", "uv", "virtualenv"]
    with pytest.raises(UnknownNameError, match="databricks, demo, kubernetes, local, ray, slurm"):
        get_backend("yarn")


def test_a_built_in_name_is_the_built_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin(tmp_path, monkeypatch, "[reprorun.backends]\nlocal = demo_plugin:create\n", MODULE)
    assert get_backend("local").name == "local"


def test_a_plugin_that_fails_to_import_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin(
        tmp_path,
        monkeypatch,
        "[reprorun.backends]\nbroken = demo_plugin:create\n",
        "import no_such_module_here\n",
    )
    with pytest.raises(ExecutionError) as err:
        get_backend("broken")
    assert str(err.value) == (
        "The backend 'broken' (package demo-plugin) could not be loaded from "
        "demo_plugin:create: ModuleNotFoundError: No module named 'no_such_module_here'"
    )
