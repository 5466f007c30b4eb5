"""`reprorun run` end to end: real subprocesses, a real SQLite store on disk, real git."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reprorun.tracking.store import open_store
from tests.conftest import IRIS, make_project, reprorun_cli

ECHO_ARGS = """
import json, sys
json.dump(sys.argv[1:], open("argv.json", "w"))
"""


def only_run(home: Path) -> dict:
    listing = reprorun_cli("runs", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    runs = json.loads(listing.stdout)
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_iris_example_records_everything(home: Path) -> None:
    result = reprorun_cli("run", str(IRIS), "-P", "max_depth=3", "-P", "ccp_alpha=0.01")
    assert result.returncode == 0, result.stderr
    assert "Creating a Python 3.11" in result.stderr  # the environment was built (uv)
    assert "accuracy=" in result.stdout  # the child's output reached the terminal

    run = only_run(home)
    info, data = run["info"], run["data"]
    assert set(run) == {"info", "data", "exit_code", "exit_reason", "exit_signal", "exit_detail"}
    assert (run["exit_reason"], run["exit_code"], run["exit_signal"]) == ("succeeded", "0", None)
    assert set(info) == {
        "run_id",
        "experiment_id",
        "run_name",
        "status",
        "start_time",
        "end_time",
        "artifact_uri",
    }
    assert info["status"] == "FINISHED"
    assert info["end_time"] >= info["start_time"]
    assert info["artifact_uri"].startswith("file://")
    assert data["params"] == {"max_depth": "3", "ccp_alpha": "0.01"}
    assert 0.8 < data["metrics"]["accuracy"] <= 1.0
    tags = data["tags"]
    assert tags["mlflow.project.entryPoint"] == "main"
    assert tags["mlflow.source.type"] == "PROJECT"
    assert tags["mlflow.project.env"] == "uv"
    assert len(tags["reprorun.env.hash"]) == 20
    assert tags["reprorun.env.lock"] == "environment/requirements.lock"
    assert tags["mlflow.project.backend"] == "local"
    assert tags["reprorun.command"] == "python train.py --max_depth 3 --ccp_alpha 0.01"

    show = reprorun_cli("runs", "show", info["run_id"][:8])
    assert show.returncode == 0, show.stderr
    for expected in (
        "FINISHED",
        "accuracy",
        "max_depth",
        "model/model.pkl",
        "logs/run.log",
        "reprorun_pickle",
    ):
        assert expected in show.stdout

    artifacts = Path(info["artifact_uri"][len("file://") :])
    assert "accuracy=" in (artifacts / "logs" / "run.log").read_text()
    lock = (artifacts / "environment" / "requirements.lock").read_text()
    assert lock.startswith("# reprorun lock: python 3.11")
    assert "scikit-learn==" in lock and "numpy==" in lock

    import reprorun

    model = reprorun.load_model(f"runs:/{info['run_id']}/model")
    assert model.get_params()["max_depth"] == 3
    assert model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]


def test_failing_command_marks_run_failed(home: Path, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p", "entry_points:\n  main:\n    command: 'echo about to fail; exit 3'\n"
    )
    result = reprorun_cli("run", str(project))
    assert result.returncode == 1
    assert "FAILED" in result.stderr
    run = only_run(home)
    assert run["info"]["status"] == "FAILED"
    assert run["data"]["tags"]["reprorun.exitCode"] == "3"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["-P", "n=abc", "-P", "rate=x"], "n: expected an integer, got 'abc'"),
        (["-P", "rate=0.5"], "n: required (int"),
        (["-P", "n=1", "-P", "rate=2"], "rate: expected float in [0, 1]"),
        (["-P", "noequals"], "expected KEY=VALUE"),
    ],
)
def test_bad_parameters_exit_2_and_leave_no_run(
    home: Path, tmp_path: Path, params: list[str], message: str
) -> None:
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters:\n      n: int\n"
        "      rate: {type: float, default: 0.1, min: 0, max: 1}\n    command: 'echo {n} {rate}'\n",
    )
    result = reprorun_cli("run", str(project), *params)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(reprorun_cli("runs", "list", "--json").stdout) == []


def test_every_bad_parameter_is_listed_at_once(home: Path, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters:\n      a: int\n      b: float\n      c: {type: string, choices: [x, y]}\n"
        "    command: 'true'\n",
    )
    result = reprorun_cli("run", str(project), "-P", "a=1.5", "-P", "b=fast", "-P", "c=z")
    assert result.returncode == 2
    for name in (
        "a: expected an integer, got '1.5'",
        "b: expected a float, got 'fast'",
        "c: expected one of x, y",
    ):
        assert name in result.stderr


def test_unknown_entry_point_and_missing_uri(home: Path, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  train:\n    command: 'true'\n  evaluate:\n    command: 'true'\n",
    )
    result = reprorun_cli("run", str(project), "-e", "predict")
    assert result.returncode == 2
    assert "Unknown entry point 'predict'" in result.stderr
    assert "evaluate, train" in result.stderr

    missing = reprorun_cli("run", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "no such directory" in missing.stderr


def test_malformed_mlproject_names_file_and_line(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "name: x\nentry_points:\n  main:\n    command: [oops\n")
    result = reprorun_cli("run", str(project))
    assert result.returncode == 2
    assert f"{project / 'MLproject'}:" in result.stderr
    assert "YAML syntax error" in result.stderr


@pytest.mark.parametrize(
    "value", ["x; touch pwned", "$(touch pwned)", "`touch pwned`", "a b 'c' \"d\"", "--flag"]
)
def test_parameter_values_reach_the_program_as_one_literal_argument(
    home: Path, tmp_path: Path, value: str
) -> None:
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters:\n      s: string\n    command: 'python echo_args.py {s}'\n",
        {"echo_args.py": ECHO_ARGS},
    )
    result = reprorun_cli("run", str(project), "-P", f"s={value}", "-P", f"extra={value}")
    assert result.returncode == 0, result.stderr
    assert json.loads((project / "argv.json").read_text()) == [value, "--extra", value]
    assert not (project / "pwned").exists()


def test_scripts_without_mlproject_and_undeclared_params(home: Path, tmp_path: Path) -> None:
    project = tmp_path / "bare"
    project.mkdir()
    (project / "echo_args.py").write_text(ECHO_ARGS)
    (project / "hello.sh").write_text('echo "hello $1 $2" > out.txt\n')
    assert (
        reprorun_cli("run", str(project), "-e", "echo_args.py", "-P", "alpha=0.5").returncode == 0
    )
    assert json.loads((project / "argv.json").read_text()) == ["--alpha", "0.5"]
    assert reprorun_cli("run", str(project), "-e", "hello.sh", "-P", "who=you").returncode == 0
    assert (project / "out.txt").read_text() == "hello --who you\n"


def test_path_parameters_become_absolute(home: Path, tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters:\n      data: {type: path, default: data.csv}\n"
        "    command: 'python echo_args.py {data}'\n",
        {"echo_args.py": ECHO_ARGS, "data.csv": "a,b\n"},
    )
    (tmp_path / "other.csv").write_text("x\n")
    assert reprorun_cli("run", str(project)).returncode == 0
    assert json.loads((project / "argv.json").read_text()) == [str(project / "data.csv")]
    assert reprorun_cli("run", str(project), "-P", "data=other.csv", cwd=tmp_path).returncode == 0
    assert json.loads((project / "argv.json").read_text()) == [str(tmp_path / "other.csv")]


def test_user_code_param_and_relogging(home: Path, tmp_path: Path) -> None:
    train = """
import reprorun
depth = reprorun.param("depth", 3)
rate = reprorun.param("rate", 0.5)
assert isinstance(depth, int) and isinstance(rate, float), (depth, rate)
reprorun.log_param("depth", depth)          # the same value again: accepted
reprorun.log_metric("loss", 1.0, step=0)
reprorun.log_metric("loss", 0.5, step=1)
reprorun.set_tag("stage", "trained")
print("depth", depth, "rate", rate)
reprorun.log_param("depth", depth + 1)      # a different value: a clear error
"""
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters:\n      depth: {type: int, default: 3}\n"
        "    command: 'python train.py'\n",
        {"train.py": train},
    )
    result = reprorun_cli("run", str(project), "-P", "depth=7")
    assert result.returncode == 1  # the last line fails on purpose
    assert "depth 7 rate 0.5" in result.stdout
    assert "Parameter 'depth'" in result.stdout and "cannot change it to '8'" in result.stdout
    run = only_run(home)
    assert run["info"]["status"] == "FAILED"
    assert run["data"]["params"] == {"depth": "7", "rate": "0.5"}
    assert run["data"]["metrics"] == {"loss": 0.5}
    assert run["data"]["tags"]["stage"] == "trained"
    history = open_store().get_metric_history(run["info"]["run_id"], "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5)]


def test_git_provenance_with_dirty_flag_and_no_credentials(home: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    project = make_project(repo / "sub" / "proj", "entry_points:\n  main:\n    command: 'true'\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "trunk", str(repo)], check=True)
    subprocess.run(
        [*git, "remote", "add", "origin", "https://user:s3cret@example.com/org/repo.git"],
        cwd=repo,
        check=True,
    )
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()

    assert reprorun_cli("run", str(project)).returncode == 0
    tags = only_run(home)["data"]["tags"]
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.git.repoURL"] == "https://example.com/org/repo.git"
    assert tags["mlflow.source.name"] == "https://example.com/org/repo.git#sub/proj"
    assert tags["mlflow.source.git.branch"] == "trunk"
    assert tags["reprorun.git.dirty"] == "false"
    assert "s3cret" not in json.dumps(tags)

    (repo / "elsewhere.txt").write_text("outside the project folder: not this run's code")
    assert reprorun_cli("run", str(project)).returncode == 0
    latest = json.loads(reprorun_cli("runs", "list", "--json").stdout)[0]
    assert latest["data"]["tags"]["reprorun.git.dirty"] == "false"
    assert latest["data"]["tags"]["mlflow.gitBranchName"] == "trunk"

    (project / "new.txt").write_text("uncommitted")
    assert reprorun_cli("run", str(project)).returncode == 0
    latest = json.loads(reprorun_cli("runs", "list", "--json").stdout)[0]
    assert latest["data"]["tags"]["reprorun.git.dirty"] == "true"


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"]
)
def test_a_signal_kills_the_whole_process_group_and_marks_killed(
    home: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    command: 'sleep 300 & echo $! > child.pid; echo started; wait'\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprorun", "run", str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (project / "child.pid").exists() or not (project / "child.pid").read_text().strip():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    grandchild = int((project / "child.pid").read_text())
    proc.send_signal(sig)  # what Ctrl-C (SIGINT) or a `kill` (SIGTERM) delivers
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, stderr
    assert "KILLED" in stderr
    assert only_run(home)["info"]["status"] == "KILLED"
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # the grandchild may take a moment to be reaped
            os.kill(grandchild, 0)
            time.sleep(0.05)


def test_two_runs_started_at_once_both_land(home: Path, tmp_path: Path) -> None:
    train = "import reprorun\nfor i in range(20):\n    reprorun.log_metric('m', i, step=i)\n"
    project = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters:\n      k: int\n    command: 'python train.py'\n",
        {"train.py": train},
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "reprorun", "run", str(project), "-P", f"k={k}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    runs = json.loads(reprorun_cli("runs", "list", "--json").stdout)
    assert sorted(r["data"]["params"]["k"] for r in runs) == ["0", "1"]
    assert all(
        r["info"]["status"] == "FINISHED" and r["data"]["metrics"] == {"m": 19} for r in runs
    )


def test_dry_run_shows_plan_and_touches_nothing(home: Path, tmp_path: Path) -> None:
    result = reprorun_cli("run", str(IRIS), "--dry-run", "--json", "-P", "max_depth=4")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["parameters"]["max_depth"] == {"value": 4, "text": "4", "source": "cli"}
    assert plan["parameters"]["ccp_alpha"]["source"] == "default"
    assert plan["command"] == "python train.py --max_depth 4 --ccp_alpha 0.05"
    assert plan["env_manager"] == "uv"  # iris declares python_env.yaml
    assert not (home / "store.db").exists()

    human = reprorun_cli("run", str(IRIS), "--dry-run")
    assert "python train.py --max_depth 3 --ccp_alpha 0.05" in human.stdout
    assert "Environment  uv (python_env.yaml)" in human.stdout
    bad = reprorun_cli("run", str(IRIS), "--dry-run", "-P", "max_depth=0")
    assert bad.returncode == 2 and "at least 1" in bad.stderr


def test_help_params_lists_types_defaults_and_help(home: Path) -> None:
    result = reprorun_cli("run", str(IRIS), "--help-params")
    assert result.returncode == 0, result.stderr
    for expected in ("max_depth", "int", "Maximum depth", "ccp_alpha", "0.05"):
        assert expected in result.stdout
    as_json = json.loads(reprorun_cli("run", str(IRIS), "--help-params", "--json").stdout)
    assert [p["name"] for p in as_json["parameters"]] == ["max_depth", "ccp_alpha"]


def test_experiments_and_tracking_uri_override(home: Path, tmp_path: Path) -> None:
    store = tmp_path / "elsewhere" / "store.db"
    uri = f"sqlite:///{store}"
    project = make_project(tmp_path / "p", "entry_points:\n  main:\n    command: 'true'\n")
    assert (
        reprorun_cli("experiments", "create", "tuning", "--tracking-uri", uri).stdout.strip() == "1"
    )
    dup = reprorun_cli("experiments", "create", "tuning", "--tracking-uri", uri)
    assert dup.returncode == 2 and "already exists" in dup.stderr
    assert (
        reprorun_cli(
            "run", str(project), "--experiment-name", "tuning", "--tracking-uri", uri
        ).returncode
        == 0
    )
    env = {**os.environ, "REPRORUN_TRACKING_URI": uri}
    runs = json.loads(
        reprorun_cli("runs", "list", "--experiment-name", "tuning", "--json", env=env).stdout
    )
    assert len(runs) == 1 and runs[0]["info"]["experiment_id"] == "1"
    assert not (home / "store.db").exists()
    names = [
        e["name"] for e in json.loads(reprorun_cli("experiments", "list", "--json", env=env).stdout)
    ]
    assert names == ["Default", "tuning"]


def test_param_of_another_type_than_the_logged_text_does_not_clash(
    home: Path, tmp_path: Path
) -> None:
    # The runner logs "5"; the code asks for a float: 5.0 in the code, no ParamConflict.
    project = tmp_path / "bare"
    project.mkdir()
    (project / "train.py").write_text(
        "import reprorun\nlr = reprorun.param('lr', 0.1)\nassert lr == 5.0 and isinstance(lr, float)\n"
    )
    result = reprorun_cli("run", str(project), "-e", "train.py", "-P", "lr=5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert only_run(home)["data"]["params"] == {"lr": "5"}


def test_subdirectory_suffix_on_a_local_uri(home: Path, tmp_path: Path) -> None:
    make_project(tmp_path / "repo" / "proj", "entry_points:\n  main:\n    command: 'echo in-sub'\n")
    result = reprorun_cli("run", f"{tmp_path / 'repo'}#proj")
    assert result.returncode == 0, result.stderr
    assert "in-sub" in result.stdout
    escape = reprorun_cli("run", f"{tmp_path / 'repo'}#../..")
    assert escape.returncode == 2 and "leaves" in escape.stderr


def test_unusable_stores_are_clear_errors(home: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "entry_points:\n  main:\n    command: 'true'\n")
    no_driver = reprorun_cli("run", str(project), "--tracking-uri", "mysql://u@127.0.0.1/db")
    assert no_driver.returncode == 2, no_driver.stderr
    assert "database driver that is not installed" in no_driver.stderr
    assert "Traceback" not in no_driver.stderr

    env = {**os.environ, "REPRORUN_ARTIFACT_ROOT": "/proc/no-such-place"}
    no_folder = reprorun_cli("run", str(project), env=env)
    assert no_folder.returncode == 1
    assert "Cannot create the run's artifact folder" in no_folder.stderr
    assert "Traceback" not in no_folder.stderr
    assert only_run(home)["info"]["status"] == "FAILED"


def test_a_killed_supervisor_is_visible_and_work_prune(home: Path, tmp_path: Path) -> None:
    token = f"orphan-{os.getpid()}-{time.monotonic_ns()}"
    project = make_project(
        tmp_path / "p", f"entry_points:\n  main:\n    command: 'sleep 300 && echo {token}'\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprorun", "run", str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not json.loads(reprorun_cli("runs", "list", "--json").stdout):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    run_id = only_run(home)["info"]["run_id"]
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to record anything
    proc.communicate(timeout=30)
    # The next reader closes the run: FAILED, with the reason, and the command stopped too
    # (it died with its reprorun by the parent-death signal; its group is killed if not).
    shown = reprorun_cli("runs", "show", run_id)
    assert "FAILED" in shown.stdout and "ended without ending the run" in shown.stdout
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", token], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the killed run's command is still running"
        time.sleep(0.1)

    (home / "work" / "old-run").mkdir(parents=True)
    os.utime(home / "work" / "old-run", (0, 0))
    pruned = reprorun_cli("work", "prune", "--older-than", "1")
    assert "1 working copy removed" in pruned.stdout
    assert not (home / "work" / "old-run").exists()
