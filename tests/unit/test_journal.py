"""The journal of run ends a store refused: retries, where records go, whose records count."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from reprorun.backends import journal
from reprorun.backends.journal import Ending
from reprorun.errors import RunNotRecorded
from reprorun.tracking.entities import RunStatus, SystemTags
from reprorun.tracking.store import open_store


class Refusing:
    """A store that refuses ``failures`` writes, then takes them."""

    def __init__(self, store: Any, failures: int):
        self._store = store
        self.failures = failures

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        self._store.set_tags(run_id, tags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _ending(run_id: str, owner: str = "host:1:2") -> Ending:
    return Ending(run_id, RunStatus.FAILED, 1234, {SystemTags.EXIT_CODE: "3"}, owner)


def test_a_refusal_that_passes_is_retried_and_recorded(home: Path) -> None:
    store = open_store()
    run_id = store.create_run("0").info.run_id
    refusing = Refusing(store, failures=2)
    journal.record_end(refusing, _ending(run_id))  # type: ignore[arg-type]
    run = store.get_run(run_id)
    assert run.info.status is RunStatus.FAILED and run.info.end_time == 1234
    assert run.data.tags[SystemTags.EXIT_CODE] == "3"
    assert journal.find(run_id) is None


def test_a_lasting_refusal_is_kept_in_the_journal(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(journal.RETRY_ENV, "0.3")
    store = open_store()
    run_id = store.create_run("0").info.run_id
    with pytest.raises(RunNotRecorded) as raised:
        journal.record_end(Refusing(store, failures=10**6), _ending(run_id))  # type: ignore[arg-type]
    assert raised.value.journal == home / "journal" / f"{run_id}.json"
    assert "No space left on device" in str(raised.value)
    assert f"reprorun runs status {run_id}" in str(raised.value)
    found = journal.find(run_id)
    assert found is not None and found[1] == _ending(run_id)
    assert store.get_run(run_id).info.status is RunStatus.RUNNING


def test_an_unwritable_home_falls_back_to_a_private_temporary_folder(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / "journal").write_text("not a folder")  # nothing can be written under it
    monkeypatch.setattr(journal.tempfile, "gettempdir", lambda: str(tmp_path))
    path = journal.write(_ending("r1"))
    assert path == tmp_path / f"reprorun-{os.getuid()}" / "journal" / "r1.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert journal.find("r1") == (path, _ending("r1"))
    # A folder others may write to is not trusted, for writing or reading.
    path.parent.chmod(0o777)
    assert journal.find("r1") is None
    assert journal.write(_ending("r2")) is None
    # Nor one whose parent (made first by someone else) others may write to, or a link.
    path.parent.chmod(0o700)
    path.parent.parent.chmod(0o777)
    assert journal.find("r1") is None
    assert journal.write(_ending("r3")) is None
    path.parent.parent.chmod(0o700)
    assert journal.find("r1") == (path, _ending("r1"))
    linked = tmp_path / "elsewhere"
    linked.mkdir(mode=0o700)
    path.parent.rename(linked / "journal")
    path.parent.symlink_to(linked / "journal")
    assert journal.find("r1") is None
    assert journal.write(_ending("r4")) is None


def test_a_record_of_another_owner_does_not_end_the_run(home: Path) -> None:
    """A stale or planted record cannot close a run: only its owner's record counts."""
    from reprorun.backends.supervised import SupervisedRun

    store = open_store()
    run = store.create_run("0", tags={SystemTags.SUPERVISOR: "host:1:2"})
    journal.write(_ending(run.info.run_id, owner="host:9:9"))
    handle = SupervisedRun(store.get_run(run.info.run_id), store)
    assert handle._record_journal() is False
    journal.write(_ending(run.info.run_id, owner="host:1:2"))
    assert handle._record_journal() is True
    assert store.get_run(run.info.run_id).info.status is RunStatus.FAILED
    assert journal.find(run.info.run_id) is None


def test_a_launch_failure_on_a_refusing_store_keeps_its_error_and_its_end(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launch error is what the caller sees; the FAILED end waits in the journal."""
    from reprorun.backends.base import FAILURE_TAG
    from reprorun.projects.lifecycle import end_unlaunched

    monkeypatch.setenv(journal.RETRY_ENV, "0.2")
    store = open_store()
    run_id = store.create_run("0").info.run_id
    end_unlaunched(Refusing(store, failures=10**6), run_id, ValueError("no cluster"))  # type: ignore[arg-type]
    found = journal.find(run_id)
    assert found is not None
    ending = found[1]
    assert ending.status is RunStatus.FAILED
    assert ending.tags[FAILURE_TAG] == "ValueError: no cluster"
    assert store.get_run(run_id).info.status is RunStatus.RUNNING
