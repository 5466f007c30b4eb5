"""`reprorun runs diff`: real runs of a real git repository, and runs made through the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprorun.app import Reprorun
from reprorun.projects.diff import diff_runs, parse_lock
from reprorun.tracking.artifacts import local_dir
from reprorun.tracking.entities import Metric, SystemTags, now_ms
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
MLPROJECT = (
    "entry_points:\n  main:\n    parameters:\n      alpha: {type: float, default: 0.5}\n"
    "    command: 'python train.py --alpha {alpha}'\n"
)
TRAIN_V1 = (
    "import sys, reprorun\nalpha = float(sys.argv[2])\n"
    "reprorun.log_metric('score', alpha * 2)\nreprorun.log_metric('loss', 1 - alpha)\n"
)
TRAIN_V2 = (
    "import sys, reprorun\nalpha = float(sys.argv[2])\n"
    "reprorun.log_metric('score', alpha * 2)\n"
    "reprorun.log_metric('loss', 1 - alpha)\n"
    "reprorun.log_metric('acc', 0.9)\n"
)
REPORT_KEYS = {"runs", "params", "code", "environment", "data", "backend", "metrics", "fingerprint"}


def runs_diff(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess. `diff` registers itself on `runs` when
    reprorun.cli.diff is imported, so import it explicitly (harmless once cli/ does too)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import reprorun.cli.diff, reprorun.cli as c; c.main()",
            "runs",
            "diff",
            *args,
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def git(repo: Path, *args: str) -> str:
    done = subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def run_ids() -> list[str]:
    """Run ids, oldest first."""
    listing = reprorun_cli("runs", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    return [r["info"]["run_id"] for r in reversed(json.loads(listing.stdout))]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with the project in proj/, one commit."""
    root = tmp_path / "repo"
    make_project(root / "proj", MLPROJECT, {"train.py": TRAIN_V1})
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "add", ".")
    git(root, "commit", "-qm", "First version")
    return root


def second_commit(repo: Path) -> str:
    """train.py gains one line, data.csv is new: the commit between the two runs."""
    (repo / "proj" / "train.py").write_text(TRAIN_V2)
    (repo / "proj" / "data.csv").write_text("a,b\n1,2\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "Log accuracy; add the data")
    return git(repo, "rev-parse", "HEAD")


def test_two_runs_of_a_local_checkout(home: Path, repo: Path) -> None:
    project = repo / "proj"
    first = reprorun_cli("run", str(project), "--env-manager", "local", "-P", "alpha=0.25")
    assert first.returncode == 0, first.stderr
    commit_b = second_commit(repo)
    second = reprorun_cli("run", str(project), "--env-manager", "local", "-P", "alpha=0.5")
    assert second.returncode == 0, second.stderr
    run_a, run_b = run_ids()

    done = runs_diff(run_a[:8], run_b[:8], "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == REPORT_KEYS
    assert report["runs"]["a"]["run_id"] == run_a and report["runs"]["b"]["run_id"] == run_b
    assert report["params"]["changed"] == {"alpha": {"a": "0.25", "b": "0.5"}}
    assert report["params"]["added"] == {} and report["params"]["removed"] == {}

    code = report["code"]
    assert code["b"]["commit"] == commit_b
    assert code["a"]["dirty"] is False and code["b"]["dirty"] is False
    assert code["same_commit"] is False and code["range_unavailable"] is None
    span = code["range"]
    assert span["commits_a_to_b"] == 1 and span["commits_b_to_a"] == 0
    assert span["log_a_to_b"] == [{"commit": commit_b, "subject": "Log accuracy; add the data"}]
    assert span["files"] == [
        {"path": "proj/data.csv", "added": 2, "deleted": 0},
        {"path": "proj/train.py", "added": 1, "deleted": 0},
    ]
    assert (span["insertions"], span["deletions"]) == (3, 0)

    metrics = report["metrics"]
    assert metrics["changed"]["score"] == {"a": 0.5, "b": 1.0, "delta": 0.5, "relative": 1.0}
    assert metrics["changed"]["loss"]["delta"] == pytest.approx(-0.25)
    assert metrics["changed"]["loss"]["relative"] == pytest.approx(-1 / 3)
    assert metrics["only_b"] == {"acc": 0.9} and metrics["only_a"] == {}
    assert report["backend"] == {"a": "local", "b": "local", "same": True}
    assert report["environment"]["a"]["manager"] == "local"
    assert report["environment"]["packages"] is None  # the local interpreter has no lock
    assert "no lock recorded" in report["environment"]["packages_unavailable"]
    assert report["fingerprint"]["recorded"] and report["fingerprint"]["same"] is False
    assert report["fingerprint"]["parts"]["source_tree"]["same"] is False
    assert report["fingerprint"]["parts"]["entry_point"]["same"] is True

    text = runs_diff(run_a, run_b)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "alpha  0.25 -> 0.5" in out
    assert "1 commit from A to B:" in out
    assert f"{commit_b[:12]}  Log accuracy; add the data" in out
    assert "2 files changed, 3 insertions(+), 0 deletions(-)" in out
    assert "proj/train.py  +1 -0" in out
    assert "score  0.5 -> 1" in out and "+0.5 (+100.00%)" in out
    assert "only in B: 0.9" in out
    assert "Backend: local" in out

    same = runs_diff(run_b, run_b)
    assert same.returncode == 0, same.stderr
    assert "Parameters: same (1)" in same.stdout
    assert f"Code: same commit {commit_b[:12]}" in same.stdout
    assert "Metrics: same (acc, loss, score)" in same.stdout


def test_runs_of_a_git_url_use_the_mirror(home: Path, repo: Path) -> None:
    commit_a = git(repo, "rev-parse", "HEAD")
    commit_b = second_commit(repo)
    url = repo.as_uri() + "#proj"
    for commit in (commit_a, commit_b):
        done = reprorun_cli("run", url, "--version", commit, "--env-manager", "local")
        assert done.returncode == 0, done.stderr
    run_a, run_b = run_ids()

    report = diff_runs(open_store(), run_a, run_b)
    span = report["code"]["range"]
    assert report["code"]["a"]["source_kind"] == "git"
    assert Path(span["repository"]).name == "mirror.git"
    assert span["commits_a_to_b"] == 1
    assert [f["path"] for f in span["files"]] == ["proj/data.csv", "proj/train.py"]

    backwards = diff_runs(open_store(), run_b, run_a)["code"]["range"]
    assert backwards["commits_a_to_b"] == 0 and backwards["commits_b_to_a"] == 1
    assert backwards["log_b_to_a"][0]["subject"] == "Log accuracy; add the data"
    assert backwards["files"][1] == {"path": "proj/train.py", "added": 0, "deleted": 1}


LOCK_A = "# reprorun lock: python 3.11.7, uv, from python_env.yaml\nnumpy==1.26.4\npandas==2.1.0\nScikit_Learn==1.3.2\n"
LOCK_B = "# reprorun lock: python 3.11.7, uv, from python_env.yaml\nnumpy==2.0.1\nscikit-learn==1.3.2\nscipy==1.13.0\n"


def _parts(data: dict[str, str], env: str) -> str:
    return json.dumps(
        {
            "version": 1,
            "source_tree": "1" * 64,
            "commit": None,
            "dirty": None,
            "entry_point": "main",
            "params": {"train": "train.csv"},
            "env": env,
            "data": data,
        }
    )


def test_packages_and_data_from_stored_runs(app: Reprorun) -> None:
    store = app.store
    made = []
    for lock, data, env, accuracy in (
        (LOCK_A, {"train": "a" * 64, "labels": "c" * 64}, "e" * 64, 0.8),
        (LOCK_B, {"train": "b" * 64, "labels": "c" * 64}, "f" * 64, 0.9),
    ):
        run = store.create_run(
            "0",
            tags={
                SystemTags.ENV: "uv",
                SystemTags.ENV_PYTHON: "3.11.7",
                SystemTags.ENV_LOCK: "environment/requirements.lock",
                SystemTags.BACKEND: "local",
                SystemTags.GIT_COMMIT: ("1" if accuracy < 0.85 else "2") * 40,
                "reprorun.fingerprint": ("3" if accuracy < 0.85 else "4") * 64,
                "reprorun.fingerprint.parts": _parts(data, env),
            },
            params={"train": "train.csv"},
        )
        store.log_metric(run.info.run_id, Metric("accuracy", accuracy, now_ms()))
        lock_file = local_dir(run.info.artifact_uri) / "environment" / "requirements.lock"
        lock_file.parent.mkdir(parents=True)
        lock_file.write_text(lock)
        made.append(run.info.run_id)
    run_a, run_b = made

    report = diff_runs(store, run_a, run_b)
    packages = report["environment"]["packages"]
    assert packages["added"] == {"scipy": "1.13.0"}
    assert packages["removed"] == {"pandas": "2.1.0"}
    assert packages["changed"] == {"numpy": {"a": "1.26.4", "b": "2.0.1"}}
    assert packages["unchanged"] == 1  # Scikit_Learn and scikit-learn are one package
    assert report["environment"]["same"] is False
    data = report["data"]
    assert data["recorded"] and data["same"] is False
    assert data["params"]["train"] == {"status": "changed", "a": "a" * 64, "b": "b" * 64}
    assert data["params"]["labels"]["status"] == "same"
    parts = report["fingerprint"]["parts"]
    assert parts["env"]["same"] is False and parts["source_tree"]["same"] is True
    assert report["code"]["range"] is None
    assert report["code"]["range_unavailable"] == (
        "no checkout or mirror of the repository on this machine"
    )
    assert report["metrics"]["changed"]["accuracy"]["delta"] == pytest.approx(0.1)

    text = runs_diff(run_a, run_b)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "packages: 1 added, 1 removed, 1 changed, 1 the same" in out
    assert "changed  numpy   1.26.4 -> 2.0.1" in out
    assert "added    scipy   1.13.0" in out and "removed  pandas  2.1.0" in out
    assert "train   changed" in out and "labels  same" in out
    assert "commit range unavailable: no checkout or mirror" in out
    assert "differs in: data, env" in out


def test_older_runs_without_lock_or_fingerprint(app: Reprorun) -> None:
    store = app.store
    old = store.create_run("0", tags={SystemTags.ENV: "local"}).info.run_id
    new = store.create_run(
        "0", tags={SystemTags.ENV: "uv", SystemTags.ENV_LOCK: "environment/requirements.lock"}
    ).info.run_id
    report = diff_runs(store, old, new)
    assert report["data"] == {
        "recorded": False,
        "not_recorded": "data fingerprints not recorded for run A and B",
        "same": None,
        "params": {},
    }
    assert report["fingerprint"]["recorded"] is False
    assert report["environment"]["packages_unavailable"] == (
        "run A: no lock recorded; run B: lock artifact environment/requirements.lock is missing"
    )
    assert "no git commit" in report["code"]["range_unavailable"]
    out = runs_diff(old, new).stdout
    assert "Fingerprint: not recorded" in out
    assert "manager  local -> uv" in out


def test_parse_lock_formats() -> None:
    text = (
        "# reprorun lock: conda\n@EXPLICIT\n"
        "https://conda.anaconda.org/conda-forge/linux-64/numpy-1.26.4-py311h64a7726_0.conda\n"
        "pkg @ file:///wheels/pkg-1.0-py3-none-any.whl\n"
        "tomli==2.0.1 ; python_version < '3.11'\n"
    )
    assert parse_lock(text) == {
        "numpy": "1.26.4",
        "pkg": "@ file:///wheels/pkg-1.0-py3-none-any.whl",
        "tomli": "2.0.1",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deadbeef", "cafebabe"], "No run id starts with 'deadbeef'"),
        (["xy", "cafebabe"], "give the full id or at least 4 hex digits"),
    ],
)
def test_unknown_runs_are_a_clear_error(home: Path, args: list[str], message: str) -> None:
    open_store().create_run("0")  # a store with a run, none of them these
    done = runs_diff(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
