"""Run identity: the fingerprint every run records, `run --reuse` / `--dry-run --reuse`,
and `rerun --verify`, with real git checkouts and real runs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from reprorun.projects.fingerprint import PARTS_TAG, TAG, HashCache, content_hash
from reprorun.tracking.store import close_stores, open_store
from tests.conftest import make_project, reprorun_cli

pytestmark = pytest.mark.slow

MLPROJECT = """
name: ident
entry_points:
  main:
    parameters:
      n: {type: int, default: 1}
      data: {type: path, default: data}
    command: "python train.py {n} {data}"
"""
TRAIN = """
import os, sys
import reprorun
n, data = int(sys.argv[1]), sys.argv[2]
size = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data))
reprorun.log_metric("score", n * 10 + size)
if os.environ.get("NOISY"):  # a file counting the runs: each run's noise differs by 1e-4
    counter = os.environ["NOISY"]
    count = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
    open(counter, "w").write(str(count))
    reprorun.log_metric("noise", 0.5 + count * 1e-4)
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    repo = make_project(tmp_path / "repo", MLPROJECT, {"train.py": TRAIN, ".gitignore": "out/\n"})
    (repo / "data").mkdir()
    (repo / "data" / "a.csv").write_text("1,2\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return repo


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return reprorun_cli("run", *args, "--env-manager", "local", env=env)


def runs() -> list:  # type: ignore[type-arg]
    close_stores()
    store = open_store()
    return list(store.search_runs([e.experiment_id for e in store.list_experiments()]))


def test_every_run_records_its_fingerprint(project: Path, home: Path) -> None:
    assert run(str(project), "-P", "n=2").returncode == 0
    assert run(str(project), "-P", "n=2").returncode == 0
    second, first = runs()
    assert first.data.tags[TAG] == second.data.tags[TAG]
    parts = json.loads(first.data.tags[PARTS_TAG])
    assert parts["params"]["n"] == "2" and parts["entry_point"] == "main"
    assert set(parts["data"]) == {"data"} and parts["commit"] and parts["dirty"] is False
    shown = reprorun_cli("runs", "show", first.info.run_id).stdout
    assert f"fingerprint  {first.data.tags[TAG]}" in shown

    def fingerprint_after(change: object) -> str:
        assert run(str(project), "-P", "n=2").returncode == 0
        return str(runs()[0].data.tags[TAG])

    base = first.data.tags[TAG]
    (project / "out").mkdir()
    (project / "out" / "ignored.txt").write_text("git ignores me")
    assert fingerprint_after("ignored file") == base
    (project / "notes.txt").write_text("untracked, not ignored")
    with_untracked = fingerprint_after("untracked file")
    assert with_untracked != base
    (project / "data" / "b.csv").write_text("3,4\n")
    assert fingerprint_after("data") not in (base, with_untracked)


def test_reuse_returns_the_finished_run_and_says_why(project: Path, home: Path) -> None:
    first = run(str(project), "-P", "n=3")
    assert first.returncode == 0
    [original] = runs()
    again = run(str(project), "-P", "n=3", "--reuse")
    assert again.returncode == 0, again.stderr
    assert f"reusing run {original.info.run_id} FINISHED with the same fingerprint" in again.stderr
    assert "nothing run" in again.stderr
    assert len(runs()) == 1
    # Without --reuse nothing changes: a new run.
    assert run(str(project), "-P", "n=3").returncode == 0
    assert len(runs()) == 2
    # A different parameter is not reused; --dry-run --reuse says what differs.
    dry = run(str(project), "-P", "n=4", "--reuse", "--dry-run")
    assert dry.returncode == 0
    assert "Reuse        no: closest earlier run" in dry.stdout
    assert "parameter n: 3 -> 4" in dry.stdout
    dry_json = run(str(project), "-P", "n=3", "--reuse", "--dry-run", "--json")
    verdict = json.loads(dry_json.stdout)["reuse"]
    assert verdict["would_reuse"] is True and verdict["run_id"] in {r.info.run_id for r in runs()}
    assert len(runs()) == 2  # dry runs record nothing


def test_a_failed_run_is_not_reused(tmp_path: Path, home: Path) -> None:
    failing = make_project(
        tmp_path / "fails", 'name: f\nentry_points:\n  main:\n    command: "exit 3"\n'
    )
    assert run(str(failing)).returncode == 1
    again = run(str(failing), "--reuse")
    assert again.returncode == 1 and "reusing" not in again.stderr
    assert len(runs()) == 2


def test_rerun_verify_reproduces_a_deterministic_run(project: Path, home: Path) -> None:
    assert run(str(project), "-P", "n=5").returncode == 0
    [original] = runs()
    verified = reprorun_cli("rerun", original.info.run_id, "--verify")
    assert verified.returncode == 0, verified.stderr
    assert "score" in verified.stdout and "yes" in verified.stdout
    assert f"reproduced run {original.info.run_id}" in verified.stderr
    rerun_run, _ = runs()
    for each in runs():
        result = json.loads(each.data.tags["reprorun.verify"])
        assert result["reproduced"] is True and result["rerun"] == rerun_run.info.run_id
    assert rerun_run.data.tags[TAG] == original.data.tags[TAG]


def test_rerun_verify_reports_a_run_that_did_not_reproduce(
    project: Path, home: Path, tmp_path: Path
) -> None:
    noisy = dict(os.environ, NOISY=str(tmp_path / "count"))
    assert run(str(project), "-P", "n=5", env=noisy).returncode == 0
    [original] = runs()
    verified = reprorun_cli("rerun", original.info.run_id, "--verify", "--json", env=noisy)
    assert verified.returncode == 3, verified.stderr
    result = json.loads(verified.stdout)
    assert result["reproduced"] is False
    by_key = {m["key"]: m for m in result["metrics"]}
    assert by_key["score"]["reproduced"] is True and by_key["noise"]["reproduced"] is False
    # A loose tolerance accepts it (each run's noise is 1e-4 from the last).
    loose = reprorun_cli(
        "rerun", original.info.run_id, "--verify", "--tolerance", "0.01", env=noisy
    )
    assert loose.returncode == 0, loose.stdout + loose.stderr


def test_the_hash_cache_rehashes_what_changed(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    target = data / "x.bin"
    target.write_bytes(b"a" * 1000)
    cache = HashCache(tmp_path / "cache.db", racy_ns=0)  # remember even fresh files
    first = content_hash(data, cache)
    assert cache.known and content_hash(data, cache) == first
    target.write_bytes(b"b" * 1000)  # same size, new mtime
    changed = content_hash(data, cache)
    assert changed != first
    # Same size, and the old modification time put back (as cp -p or tar x do): the inode's
    # change time still moves, so the file is hashed again.
    stamp = target.stat().st_mtime_ns
    target.write_bytes(b"c" * 1000)
    os.utime(target, ns=(stamp, stamp))
    restored = content_hash(data, cache)
    assert restored not in (first, changed)
    cache.close()
    reopened = HashCache(tmp_path / "cache.db", racy_ns=0)  # persisted for the next process
    reopened.preload(target.parent.resolve())
    assert reopened.known[str(target.resolve())][-1] == hashlib.sha256(b"c" * 1000).hexdigest()
    assert content_hash(data, reopened) == restored
    reopened.close()
    # By default a file changed in the last 2 s is hashed but not remembered (git's racy rule).
    fresh = HashCache(tmp_path / "fresh.db")
    content_hash(data, fresh)
    target.write_bytes(b"d" * 1000)
    assert content_hash(data, fresh) != restored and not fresh.pending
    fresh.close()


def test_data_behind_symbolic_links_is_hashed_by_content(tmp_path: Path, home: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "f.csv").write_text("1\n")
    (outside / "sub" / "g.csv").write_text("2\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "link.csv").symlink_to(outside / "f.csv")
    (data / "linked-dir").symlink_to(outside / "sub")
    (data / "loop").symlink_to(data)  # a cycle must not hang the walk
    cache = HashCache(tmp_path / "cache.db")
    before = content_hash(data, cache)
    (outside / "sub" / "g.csv").write_text("3\n")
    assert content_hash(data, cache) != before
    cache.close()


def test_long_parameters_and_dirty_reruns(project: Path, home: Path) -> None:
    # An 8,000-character parameter is fine (the fingerprint keeps its hash).
    long_value = "x" * 7_800
    assert run(str(project), "-P", f"note={long_value}").returncode == 0
    parts = json.loads(runs()[0].data.tags[PARTS_TAG])
    assert parts["params"]["note"].startswith("sha256:")
    # A dirty run, then its rerun (the snapshot plus the stored changes): both dirty, and
    # neither has the clean commit's fingerprint, so the clean run is never reused for them.
    assert run(str(project), "-P", "n=2").returncode == 0
    clean = runs()[0]
    (project / "train.py").write_text(TRAIN.replace("n * 10", "n * 20"))
    assert run(str(project), "-P", "n=2").returncode == 0
    dirty = runs()[0]
    assert reprorun_cli("rerun", dirty.info.run_id).returncode == 0
    rerun = runs()[0]
    assert json.loads(rerun.data.tags[PARTS_TAG])["dirty"] is True
    assert clean.data.tags[TAG] not in (dirty.data.tags[TAG], rerun.data.tags[TAG])
    assert rerun.data.metrics["score"] == dirty.data.metrics["score"]
