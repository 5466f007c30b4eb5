"""--env-manager local asks the caller's python about itself once, then while nothing it depends
on changed, reuses the answer (an interpreter start, and a pyenv shim's, on every run else)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reprorun.envs import local


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = subprocess.run

    def run(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(local.subprocess, "run", run)
    return calls


def test_the_answer_is_reused_until_a_folder_on_its_path_changes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    calls = _counting(monkeypatch)
    first = local._probe(sys.executable, env)
    assert first is not None and str(site) in first["folders"]
    assert local._probe(sys.executable, env) == first
    assert len(calls) == 1  # the second answer came from the cache
    (site / "newpkg-1.0.dist-info").mkdir()  # a package installed
    os.utime(site, ns=(0, os.stat(site).st_mtime_ns + 10**9))
    second = local._probe(sys.executable, env)
    assert len(calls) == 2
    assert second is not None and "newpkg-1.0.dist-info" in second["distributions"]


def test_another_activated_environment_is_asked_again(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(monkeypatch)
    local._probe(sys.executable, {**os.environ, "VIRTUAL_ENV": "/a"})
    local._probe(sys.executable, {**os.environ, "VIRTUAL_ENV": "/b"})
    assert len(calls) == 2


def test_a_python_that_cannot_be_asked_gives_none(home: Path, tmp_path: Path) -> None:
    assert local._probe(str(tmp_path / "no-python"), dict(os.environ)) is None
