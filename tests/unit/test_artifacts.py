"""Local artifact storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprorun.errors import UserInputError
from reprorun.tracking import artifacts


def test_log_file_and_dir_and_list(tmp_path: Path) -> None:
    uri = (tmp_path / "run" / "artifacts").as_uri()
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("bb")
    assert artifacts.log_file(uri, src / "a.txt", "one") == "one/a.txt"
    artifacts.log_dir(uri, src, "tree")
    listed = {
        f.path: f.file_size for f in artifacts.list_artifacts(uri, recursive=True) if not f.is_dir
    }
    assert listed == {"one/a.txt": 1, "tree/a.txt": 1, "tree/sub/b.txt": 2}
    assert [f.path for f in artifacts.list_artifacts(uri)] == ["one", "tree"]


def test_logging_a_folder_that_contains_the_artifacts_does_not_recurse(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("x")
    uri = (tmp_path / "home" / "artifacts" / "run").as_uri()
    artifacts.log_dir(uri, tmp_path, "all")
    copied = sorted(
        p.relative_to(tmp_path / "home" / "artifacts" / "run").as_posix()
        for p in (tmp_path / "home").rglob("*")
        if p.is_file()
    )
    assert copied == ["all/train.py"]


@pytest.mark.parametrize("bad", ["../x", "/etc", "a/../../b", "..\\x"])
def test_artifact_paths_cannot_escape(tmp_path: Path, bad: str) -> None:
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserInputError, match="must be relative"):
        artifacts.log_file(tmp_path.as_uri(), tmp_path / "f.txt", bad)


def test_missing_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no such file"):
        artifacts.log_file(tmp_path.as_uri(), tmp_path / "nope.txt")
    with pytest.raises(UserInputError, match="no such directory"):
        artifacts.log_dir(tmp_path.as_uri(), tmp_path / "nope")


def test_listing_a_name_longer_than_the_file_system_takes_is_empty_not_an_error(
    tmp_path: Path,
) -> None:
    # Found by the REST fuzz test: artifacts/list?path=<300 characters> answered 500.
    from reprorun.tracking.artifacts import list_artifacts

    assert list_artifacts(tmp_path.as_uri(), "a" * 300) == []
    assert list_artifacts(tmp_path.as_uri(), "dir/" + "b" * 300 + "/c") == []
