"""Documentation that cannot go stale silently."""

from __future__ import annotations

import inspect

import reprorun.errors
from reprorun.config import SETTINGS
from tests.conftest import REPO_ROOT


def test_every_setting_is_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.env}`" in readme, setting.env


def test_every_error_class_is_in_the_tree() -> None:
    tree = reprorun.errors.__doc__ or ""
    classes = [
        name
        for name, obj in vars(reprorun.errors).items()
        if inspect.isclass(obj) and issubclass(obj, reprorun.errors.ReprorunError)
    ]
    assert len(classes) > 10
    for name in classes:
        assert name in tree, f"{name} is missing from the tree in errors.py's docstring"
    assert sorted(reprorun.errors.__all__) == sorted([*classes, "ParamProblem"])


def test_readme_commands_point_at_real_things() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "reprorun run examples/iris -P max_depth=3 -P ccp_alpha=0.01" in readme
    assert (REPO_ROOT / "examples" / "iris" / "MLproject").is_file()
    assert (REPO_ROOT / "bench" / "run_overhead.py").is_file()
    assert "python -m pytest" in (REPO_ROOT / ".ci" / "run").read_text()
