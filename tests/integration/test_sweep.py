"""`reprorun sweep`: real sweeps of a tiny MLproject in a git repository, each point a real
`reprorun run` child process."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reprorun.tracking.store import open_store
from tests.conftest import make_project

pytestmark = pytest.mark.slow

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
MLPROJECT = """\
entry_points:
  main:
    parameters:
      cp: {type: float, default: 0.1, min: 0, max: 1}
      depth: {type: int, default: 3, min: 1}
      crit: {type: string, default: gini, choices: [gini, entropy]}
      pause: {type: float, default: 0}
    command: "python train.py {cp} {depth} {crit} {pause}"
"""
# Fails for the depth named in $SWEEP_TEST_FAIL (so a retry without it succeeds).
TRAIN = """\
import os, sys, time, reprorun
cp, depth, pause = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[4])
time.sleep(pause)
if os.environ.get("SWEEP_TEST_FAIL") == str(depth):
    sys.exit(3)
reprorun.log_metric("score", round(cp * depth, 6))
"""
SWEEP = "import reprorun.cli.sweep, reprorun.cli as c; c.main()"


def sweep_argv(*args: str) -> list[str]:
    # `sweep` registers itself on the cli when reprorun.cli.sweep is imported.
    return [sys.executable, "-c", SWEEP, "sweep", *args]


def sweep_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sweep_argv(*args),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def git(repo: Path, *args: str) -> str:
    done = subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "proj", MLPROJECT, {"train.py": TRAIN})
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "add", ".")
    git(root, "commit", "-qm", "First version")
    return root


def all_runs() -> list[Any]:
    store = open_store()
    experiments = [e.experiment_id for e in store.list_experiments()]
    return list(store.search_runs(experiments, max_results=1000))


def status(sweep_id: str, *args: str) -> dict[str, Any]:
    done = sweep_cli("status", sweep_id, "--json", *args)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def only_sweep(home: Path) -> tuple[str, dict[str, Any]]:
    states = list((home / "sweeps").glob("sw-*.json"))
    assert len(states) == 1, states
    return states[0].stem, json.loads(states[0].read_text())


def test_grid_in_parallel_then_retry_failed(home: Path, project: Path) -> None:
    done = sweep_cli(
        str(project),
        "-P",
        "cp=0.1,0.2",
        "-P",
        "depth=range(2,5)",
        "--max-parallel",
        "2",
        "--env-manager",
        "local",
        "--metric",
        "score",
        "--experiment-name",
        "tuning",
        env={"SWEEP_TEST_FAIL": "4"},
    )
    assert done.returncode == 1, done.stderr  # two points failed
    lines = [line for line in done.stdout.splitlines() if line.startswith("point ")]
    assert len(lines) == 6
    assert any(line.startswith("point 2/6 cp=0.1 depth=3: FINISHED run ") for line in lines)
    assert any(line.startswith("point 3/6 cp=0.1 depth=4: FAILED run ") for line in lines)
    assert any("cp=0.2 depth=3: FINISHED" in line and "score=0.6" in line for line in lines)
    assert "Best (max score): point 5 cp=0.2 depth=3 run " in done.stdout

    sweep_id, _ = only_sweep(home)
    report = status(sweep_id)
    assert report["counts"] == {
        "pending": 0,
        "running": 0,
        "finished": 4,
        "failed": 2,
        "killed": 0,
        "cancelled": 0,
    }
    assert [p["params"] for p in report["points"]] == [
        {"cp": cp, "depth": depth} for cp in ("0.1", "0.2") for depth in ("2", "3", "4")
    ]
    assert report["parent_status"] == "FAILED"
    assert report["best"]["params"] == {"cp": "0.2", "depth": "3"}
    assert report["best"]["value"] == pytest.approx(0.6)

    runs = {r.info.run_id: r for r in all_runs()}
    parent = runs[report["parent_run_id"]]
    assert parent.info.run_name == f"sweep-{sweep_id}"
    assert parent.data.tags["reprorun.sweep.id"] == sweep_id
    assert parent.data.tags["reprorun.sweep.points"] == "6"
    assert parent.data.tags["reprorun.sweep.best"] == report["best"]["run_id"]
    children = [r for r in runs.values() if r.info.run_id != parent.info.run_id]
    assert len(children) == 6
    for point in report["points"]:
        child = runs[point["run_id"]]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["reprorun.sweep.id"] == sweep_id
        assert child.data.tags["reprorun.sweep.point"] == str(point["index"])
        assert child.data.params["cp"] == point["params"]["cp"]
        assert child.info.experiment_id == parent.info.experiment_id
        expected = "FAILED" if point["params"]["depth"] == "4" else "FINISHED"
        assert child.info.status.value == expected
    # Two at a time: some two points overlapped.
    spans = sorted(
        (runs[p["run_id"]].info.start_time, runs[p["run_id"]].info.end_time)
        for p in report["points"]
    )
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))

    # The failed points run again (without the failure); the others are left alone.
    retried = sweep_cli("retry-failed", sweep_id)
    assert retried.returncode == 0, retried.stderr
    assert "2 point(s) to run again" in retried.stderr
    assert retried.stdout.count("point ") >= 2
    after = status(sweep_id)
    assert after["counts"]["finished"] == 6 and after["parent_status"] == "FINISHED"
    assert after["best"]["params"] == {"cp": "0.2", "depth": "4"}
    for old, new in zip(report["points"], after["points"], strict=True):
        if old["status"] == "finished":
            assert new["run_id"] == old["run_id"]
        else:
            assert new["attempts"] == [old["run_id"]] and new["run_id"] != old["run_id"]
    assert len(all_runs()) == 1 + 6 + 2


@pytest.mark.parametrize(
    ("params", "extra", "named"),
    [
        (["cp=range(1,"], [], "'cp'"),  # does not parse
        (["cp=0.5,2"], [], "cp: expected float in [0, 1] (at most 1), got '2'"),
        (["depth=2,2.5"], [], "depth: expected an integer, got '2.5'"),
        (["crit=gini,mse"], [], "crit: expected one of gini, entropy (string), got 'mse'"),
        (["depth=range(0,3)"], [], "depth: expected int in [1, ] (at least 1), got '0'"),
        (["cp=uniform(0.5,3)"], ["--random", "4", "--seed", "0"], "cp: expected float in"),
        (["cp=uniform(0,1)"], [], "'cp': uniform() is a distribution"),
        (["cp=0.1", "cp=0.2"], [], "'cp': given twice"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(
    home: Path, project: Path, params: list[str], extra: list[str], named: str
) -> None:
    args = [a for p in params for a in ("-P", p)]
    done = sweep_cli(str(project), *args, *extra, "--env-manager", "local")
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert all_runs() == []
    assert not list((home / "sweeps").glob("sw-*.json")) if (home / "sweeps").exists() else True


def test_random_points_are_reproducible(home: Path, project: Path) -> None:
    def random_sweep(seed: str, *more: str) -> subprocess.CompletedProcess[str]:
        return sweep_cli(
            str(project),
            "-P",
            "cp=uniform(0,1)",
            "-P",
            "depth=randint(1,9)",
            "-P",
            "crit=choice(gini,entropy)",
            "--random",
            "3",
            "--seed",
            seed,
            *more,
        )

    def points(seed: str, *more: str) -> list[dict[str, str]]:
        done = random_sweep(seed, "--json", *more)
        assert done.returncode == 0, done.stderr
        found: list[dict[str, str]] = json.loads(done.stdout).get("points")
        return found

    first = points("1", "--dry-run")
    assert len(first) == 3
    assert points("1", "--dry-run") == first
    assert points("2", "--dry-run") != first
    assert all_runs() == []  # a dry run records nothing
    created = random_sweep("1", "--create-only")
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.strip()
    assert [p["params"] for p in status(sweep_id)["points"]] == first


def test_resume_after_the_driver_is_killed(home: Path, project: Path) -> None:
    """kill -9 of the driver mid-sweep, and of one point's reprorun too (as a reboot would):
    resume adopts the point still running, runs the orphaned one again (its run is marked
    FAILED), runs the pending ones, and leaves the finished ones alone."""
    driver = subprocess.Popen(
        sweep_argv(
            str(project),
            "-P",
            "depth=range(1,7)",
            "-P",
            "pause=1.5",
            "--max-parallel",
            "2",
            "--env-manager",
            "local",
            "--metric",
            "score",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (home / "sweeps").exists() and list((home / "sweeps").glob("sw-*.json")):
                _, state = only_sweep(home)
                finished = [p for p in state["points"] if p["status"] == "finished"]
                running = [p for p in state["points"] if p["status"] == "running" and p["run_id"]]
                if len(finished) >= 2 and len(running) == 2:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the sweep did not get two points done and two running in time")
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    sweep_id, state = only_sweep(home)
    orphan, survivor = [p for p in state["points"] if p["status"] == "running"]
    os.killpg(orphan["pid"], signal.SIGKILL)  # its reprorun dies; its run stays RUNNING
    done_before = {p["index"]: p["run_id"] for p in state["points"] if p["status"] == "finished"}
    gone = status(sweep_id)
    assert gone["driver"]["alive"] is False and gone["parent_status"] == "RUNNING"

    resumed = sweep_cli("resume", sweep_id)
    assert resumed.returncode == 0, resumed.stderr
    point = f"point {orphan['index']}/6 depth={orphan['params']['depth']} pause=1.5"
    assert f"{point}: its process was gone; it runs again" in resumed.stderr
    after = status(sweep_id)
    assert after["counts"]["finished"] == 6 and after["parent_status"] == "FINISHED"
    for index, run_id in done_before.items():
        assert after["points"][index - 1]["run_id"] == run_id  # not run again
    assert after["points"][survivor["index"] - 1]["run_id"] == survivor["run_id"]
    rerun = after["points"][orphan["index"] - 1]
    assert rerun["attempts"] == [orphan["run_id"]] and rerun["run_id"] != orphan["run_id"]
    # One run per point, plus the orphan's: nothing else ran twice.
    children = {r.info.run_id: r for r in all_runs() if "mlflow.parentRunId" in r.data.tags}
    assert len(children) == 7
    lost = children.pop(orphan["run_id"])
    assert lost.info.status.value == "FAILED" and "reprorun.sweep.orphaned" in lost.data.tags
    assert {r.info.status.value for r in children.values()} == {"FINISHED"}
    assert after["best"]["params"]["depth"] == "6"


def wait_for_first_point(home: Path, timeout: float = 30) -> str:
    """The id of the only sweep, once its first point has a run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (home / "sweeps").exists() and list((home / "sweeps").glob("sw-*.json")):
            sweep_id, state = only_sweep(home)
            if state["points"][0]["run_id"]:
                return sweep_id
        time.sleep(0.05)
    pytest.fail("the first point did not start in time")


def test_cancel(home: Path, project: Path) -> None:
    driver = subprocess.Popen(
        sweep_argv(str(project), "-P", "depth=1,2,3", "-P", "pause=30", "--env-manager", "local"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sweep_id = wait_for_first_point(home)
        cancelled = sweep_cli("cancel", sweep_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "1 killed, 2 cancelled" in cancelled.stdout
        _, stderr = driver.communicate(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 1, stderr
    report = status(sweep_id)
    assert [p["status"] for p in report["points"]] == ["killed", "cancelled", "cancelled"]
    assert report["parent_status"] == "KILLED" and report["driver"] is None
    (child,) = [r for r in all_runs() if "mlflow.parentRunId" in r.data.tags]
    assert child.info.status.value == "KILLED"

    # A sweep with no driver is cancelled in place.
    created = sweep_cli(str(project), "-P", "depth=1,2", "--create-only")
    assert created.returncode == 0, created.stderr
    other = created.stdout.strip()
    assert sweep_cli("cancel", other).returncode == 0
    report = status(other)
    assert [p["status"] for p in report["points"]] == ["cancelled", "cancelled"]
    assert report["parent_status"] == "KILLED"


def test_ctrl_c_stops_the_driver_and_resume_would_run_the_point_again(
    home: Path, project: Path
) -> None:
    driver = subprocess.Popen(
        sweep_argv(str(project), "-P", "depth=1,2", "-P", "pause=30", "--env-manager", "local"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sweep_id = wait_for_first_point(home)
        _, state = only_sweep(home)
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, stderr
    assert f"reprorun sweep resume {sweep_id} runs the rest" in stderr
    report = status(sweep_id)
    assert [p["status"] for p in report["points"]] == ["pending", "pending"]
    assert report["points"][0]["attempts"] == [state["points"][0]["run_id"]]
    assert report["parent_status"] == "KILLED" and report["driver"] is None
    (child,) = [r for r in all_runs() if "mlflow.parentRunId" in r.data.tags]
    assert child.info.status.value == "KILLED"


def test_reuse_runs_nothing_again(home: Path, project: Path) -> None:
    args = [str(project), "-P", "cp=0.3,0.4", "--env-manager", "local", "--reuse"]
    first = sweep_cli(*args, "--metric", "score")
    assert first.returncode == 0, first.stderr
    runs_before = {r.info.run_id for r in all_runs()}
    second = sweep_cli(*args, "--metric", "score")
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("(reused)") == 4  # two event lines, two table rows
    new = [r for r in all_runs() if r.info.run_id not in runs_before]
    assert len(new) == 1 and "reprorun.sweep.id" in new[0].data.tags  # the new parent only
    sweep_ids = sorted(p.stem for p in (home / "sweeps").glob("sw-*.json"))
    reports = [status(s) for s in sweep_ids]
    reused = next(r for r in reports if r["points"][0]["reused"])
    original = next(r for r in reports if not r["points"][0]["reused"])
    assert [p["run_id"] for p in reused["points"]] == [p["run_id"] for p in original["points"]]
    assert reused["counts"]["finished"] == 2 and reused["best"]["params"] == {"cp": "0.4"}


def test_resume_refused_after_a_new_commit(home: Path, project: Path) -> None:
    created = sweep_cli(str(project), "-P", "depth=2,3", "--env-manager", "local", "--create-only")
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.strip()
    old = git(project, "rev-parse", "HEAD")
    (project / "train.py").write_text(TRAIN + "print('v2')\n")
    git(project, "commit", "-qam", "Second version")
    new = git(project, "rev-parse", "HEAD")

    refused = sweep_cli("resume", sweep_id)
    assert refused.returncode == 2
    assert f"commit {old[:12]} -> {new[:12]} (files: train.py)" in refused.stderr
    assert "--allow-new-code" in refused.stderr
    assert [r for r in all_runs() if "mlflow.parentRunId" in r.data.tags] == []

    allowed = sweep_cli("resume", sweep_id, "--allow-new-code")
    assert allowed.returncode == 0, allowed.stderr
    report = status(sweep_id)
    assert report["counts"]["finished"] == 2 and report["code"]["commit"] == new
    assert report["code_changes"][0]["from"]["commit"] == old
    children = [r for r in all_runs() if "mlflow.parentRunId" in r.data.tags]
    assert {r.data.tags["mlflow.source.git.commit"] for r in children} == {new}


def test_git_source_is_pinned_to_its_commit(home: Path, project: Path) -> None:
    url = project.as_uri()  # file:// goes through the git cache: children get --version COMMIT
    old = git(project, "rev-parse", "HEAD")
    created = sweep_cli(url, "-P", "depth=2", "--env-manager", "local", "--create-only")
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.strip()
    (project / "train.py").write_text(TRAIN + "print('v2')\n")
    git(project, "commit", "-qam", "Second version")

    refused = sweep_cli("resume", sweep_id)
    assert refused.returncode == 2 and f"commit {old[:12]} -> " in refused.stderr
    allowed = sweep_cli("resume", sweep_id, "--allow-new-code")
    assert allowed.returncode == 0, allowed.stderr
    (child,) = [r for r in all_runs() if "mlflow.parentRunId" in r.data.tags]
    assert child.data.tags["mlflow.source.git.commit"] == git(project, "rev-parse", "HEAD")
    assert child.data.tags["reprorun.source.kind"] == "git"


def test_resume_finds_the_run_of_a_child_killed_before_it_said_its_id(
    home: Path, project: Path
) -> None:
    """The window between a child creating its run and writing its id: resume finds the run
    by its sweep tags instead of running the point again."""
    created = sweep_cli(str(project), "-P", "depth=1,2", "--env-manager", "local", "--create-only")
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.strip()
    state_file = home / "sweeps" / f"{sweep_id}.json"
    state = json.loads(state_file.read_text())
    store = open_store()
    from reprorun.tracking.entities import Metric, RunStatus

    done = store.create_run(
        state["spec"]["experiment_id"],
        run_name="from-a-lost-child",
        tags={"reprorun.sweep.id": sweep_id, "reprorun.sweep.point": "1"},
    )
    store.log_metric(done.info.run_id, Metric("score", 1, 1))
    store.update_run(done.info.run_id, status=RunStatus.FINISHED)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state["points"][0].update(status="running", run_id=None, pid=dead.pid, host=os.uname()[1])
    state_file.write_text(json.dumps(state))

    resumed = sweep_cli("resume", sweep_id)
    assert resumed.returncode == 0, resumed.stderr
    report = status(sweep_id)
    assert [p["status"] for p in report["points"]] == ["finished", "finished"]
    assert report["points"][0]["run_id"] == done.info.run_id
    children = [r for r in all_runs() if r.data.tags.get("reprorun.sweep.id") == sweep_id]
    assert len([r for r in children if r.data.tags.get("reprorun.sweep.point") == "1"]) == 1


def test_each_point_runs_its_request_through_the_run_pipeline(home: Path, project: Path) -> None:
    """A point's child runs the point's RunRequest (values as the sweep wrote them, cast once
    by the plan), not a `reprorun run` command line."""
    from reprorun.projects.request import RunRequest

    done = sweep_cli(str(project), "-P", "cp=0.25", "--env-manager", "local")
    assert done.returncode == 0, done.stderr
    sweep_id, state = only_sweep(home)
    folder = home / "sweeps" / sweep_id
    request = RunRequest.from_json((folder / "point-1.request.json").read_text())
    assert request.parameters == {"cp": "0.25"} and request.env_manager == "local"
    assert request.tags["reprorun.sweep.point"] == "1"
    assert request.experiment_id == state["spec"]["experiment_id"]
    started = (folder / "point-1.log").read_text().splitlines()[0]
    assert "-m reprorun.projects.trial" in started and " run " not in started
    child = open_store().get_run(state["points"][0]["run_id"])
    assert child.data.tags["reprorun.sweep.id"] == sweep_id
    assert child.data.params["cp"] == "0.25" and child.data.metrics["score"] == pytest.approx(0.75)
