"""The Slurm backend against a real single-node cluster on this machine (slurm-up.sh: Debian's
slurm-wlm 22.05 and munge, no accounting, so sacct fails and scontrol keeps ended jobs 1 h).

Each job goes from sbatch to its end in about a second here; every wait is bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

import reprorun.projects
from reprorun.backends.base import CONFIG_TAG, FAILURE_TAG, JOB_ID_TAG, SubmittedRun
from reprorun.backends.registry import get_backend
from reprorun.errors import ExecutionError, RunFailed, UserInputError
from reprorun.tracking.artifacts import local_dir
from reprorun.tracking.entities import Run, RunStatus, SystemTags
from reprorun.tracking.store import open_store
from tests.conftest import make_project, reprorun_cli


def project(tmp_path: Path, command: str) -> Path:
    return make_project(
        tmp_path / "p", f"entry_points:\n  main:\n    command: {json.dumps(command)}\n"
    )


def run_slurm(path: Path, partition: str, config: dict[str, Any] | None = None, **kw: Any) -> Any:
    return reprorun.projects.run(
        str(path),
        backend="slurm",
        backend_config={"partition": partition, "time": "5", **(config or {})},
        env_manager="local",
        echo=kw.pop("echo", False),
        **kw,
    )


def stored(run_id: str) -> Run:
    return open_store().get_run(run_id)


def stored_log(run_id: str) -> str:
    path = local_dir(stored(run_id).info.artifact_uri) / "logs" / "run.log"
    return path.read_text()


def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def scontrol_state(job_id: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=60
    ).stdout
    return out.split("JobState=")[1].split()[0]


def test_sync_run_finishes_with_its_log_and_only_the_jobs_variables(
    slurm_cluster: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAK_FROM_SUBMITTER", "yes")
    path = project(
        tmp_path,
        'echo "first line"; echo "greeting=$GREETING"; echo "leak=${LEAK_FROM_SUBMITTER:-none}";'
        ' echo "python=$(dirname "$(command -v python)")"; echo "on stderr" >&2; pwd',
    )
    chunks: list[bytes] = []
    started = time.monotonic()
    submitted = run_slurm(
        path, slurm_cluster, {"env_vars": {"GREETING": "hello there"}}, echo=chunks.append
    )
    took = time.monotonic() - started
    assert submitted.get_status() is RunStatus.FINISHED
    run = stored(submitted.run_id)
    assert run.info.status is RunStatus.FINISHED
    log = stored_log(submitted.run_id)
    folder = home / "slurm" / submitted.run_id
    for line in (
        "first line",
        "greeting=hello there",
        "leak=none",  # sbatch --export=NONE: nothing of the submitter's environment
        f"python={Path(sys.executable).parent}",  # the run's environment comes first on PATH
        "on stderr",
        str(folder / "src"),  # a copy of the project, in the run's folder
    ):
        assert line in log.splitlines(), (line, log)
    assert b"".join(chunks).decode() == log  # followed live, then stored whole
    assert run.data.tags[SystemTags.EXIT_CODE] == "0"
    assert run.data.tags[JOB_ID_TAG].isdigit()
    assert run.data.tags[SystemTags.BACKEND] == "slurm"
    assert json.loads(run.data.tags[CONFIG_TAG])["jobs_dir"] == str(home / "slurm")
    script = (folder / "job.sh").read_text()
    assert f"#SBATCH --partition={slurm_cluster}\n#SBATCH --time=5\n" in script
    assert scontrol_state(submitted.job_id) == "COMPLETED"
    assert took < 90, took


def test_exit_code_3_fails_the_run_with_the_exit_code(slurm_cluster: str, tmp_path: Path) -> None:
    path = project(tmp_path, "echo about to fail; exit 3")
    with pytest.raises(RunFailed) as excinfo:
        run_slurm(path, slurm_cluster)
    run = stored(excinfo.value.run_id)
    assert run.info.status is RunStatus.FAILED
    assert run.data.tags[SystemTags.EXIT_CODE] == "3"
    job_id = run.data.tags[JOB_ID_TAG]
    assert run.data.tags[FAILURE_TAG] == (
        f"Slurm job {job_id} ended FAILED (NonZeroExitCode, exit code 3)"
    )
    assert "about to fail" in stored_log(run.info.run_id)


def test_async_run_then_wait(slurm_cluster: str, tmp_path: Path) -> None:
    path = project(tmp_path, "sleep 1; echo done")
    submitted = run_slurm(path, slurm_cluster, synchronous=False)
    assert submitted.get_status() in (RunStatus.SCHEDULED, RunStatus.RUNNING)
    assert stored(submitted.run_id).info.status in (RunStatus.SCHEDULED, RunStatus.RUNNING)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(submitted.wait).result(timeout=60) is True
    assert stored(submitted.run_id).info.status is RunStatus.FINISHED
    assert stored_log(submitted.run_id) == "done\n"
    assert submitted.logs() == b"done\n"


def started_job(tmp_path: Path, partition: str) -> SubmittedRun:
    """An async `sleep 120` job, once it runs and has said so in its log."""
    path = project(tmp_path, "echo started; sleep 120")
    submitted: SubmittedRun = run_slurm(path, partition, synchronous=False)
    until(lambda: b"started" in submitted.logs(), 30, "the job to start")
    assert submitted.get_status() is RunStatus.RUNNING
    assert stored(submitted.run_id).info.status is RunStatus.RUNNING
    return submitted


def test_cancel_kills_a_running_job(slurm_cluster: str, tmp_path: Path) -> None:
    submitted = started_job(tmp_path, slurm_cluster)
    began = time.monotonic()
    submitted.cancel()
    took = time.monotonic() - began
    assert took < 15, took
    assert submitted.get_status() is RunStatus.KILLED
    run = stored(submitted.run_id)
    assert run.info.status is RunStatus.KILLED
    assert scontrol_state(submitted.job_id) == "CANCELLED"
    assert f"Slurm job {submitted.job_id} was CANCELLED" in run.data.tags[FAILURE_TAG]
    assert stored_log(submitted.run_id).startswith("started\n")


def test_a_job_scancelled_from_outside_is_killed_with_its_log_kept(
    slurm_cluster: str, tmp_path: Path
) -> None:
    submitted = started_job(tmp_path, slurm_cluster)
    subprocess.run(["scancel", submitted.job_id], check=True, timeout=60)
    until(lambda: submitted.get_status().is_terminal, 30, "the run to end")
    run = stored(submitted.run_id)
    assert run.info.status is RunStatus.KILLED
    assert "CANCELLED" in run.data.tags[FAILURE_TAG]
    assert run.data.tags[SystemTags.EXIT_REASON] == "cancelled"
    assert run.data.tags[SystemTags.EXIT_DETAIL].startswith("CANCELLED")
    log = stored_log(submitted.run_id)
    assert log.startswith("started\n")
    assert f"JOB {submitted.job_id} ON" in log  # slurmstepd's own note of the cancel


def test_a_job_slurm_does_not_know_fails_the_run_naming_it(
    slurm_cluster: str, tmp_path: Path
) -> None:
    backend = get_backend("slurm", {"partition": slurm_cluster})
    store = open_store()
    run = store.create_run(
        "0",
        tags={
            SystemTags.BACKEND: "slurm",
            JOB_ID_TAG: "99999999",
            CONFIG_TAG: backend.options_json(),
        },
    )
    rebuilt = get_backend("slurm", json.loads(run.data.tags[CONFIG_TAG]))
    handle = rebuilt.attach(run, store)
    assert handle.get_status() is RunStatus.FAILED
    after = stored(run.info.run_id)
    assert after.info.status is RunStatus.FAILED
    assert after.data.tags[FAILURE_TAG].startswith(
        "Slurm job 99999999 is unknown to squeue, scontrol and sacct"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"partitoin": "debug"}, "Did you mean 'partition'?"),
        ({"nodes": 0}, "'nodes' must be an integer >= 1, got 0"),
        ({"time": "1h"}, "'time' must be a Slurm time limit"),
        ({"sbatch_lines": ["--output=/tmp/x"]}, "sets --output, which reprorun sets itself"),
    ],
)
def test_bad_options_are_refused_before_any_run_exists(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    path = project(tmp_path, "true")
    with pytest.raises(UserInputError, match=message.replace("?", r"\?")):
        reprorun.projects.run(str(path), backend="slurm", backend_config=config, echo=False)
    assert open_store().search_runs(["0"]) == []


def test_attach_from_the_tags_follows_the_job(slurm_cluster: str, tmp_path: Path) -> None:
    path = project(tmp_path, "sleep 2; echo done")
    submitted = run_slurm(path, slurm_cluster, synchronous=False)
    store = open_store()
    run = store.get_run(submitted.run_id)
    handle = get_backend("slurm", json.loads(run.data.tags[CONFIG_TAG])).attach(run, store)
    assert handle.job_id == submitted.job_id
    assert handle.get_status() in (RunStatus.SCHEDULED, RunStatus.RUNNING)
    until(lambda: handle.get_status().is_terminal, 30, "the attached job to end")
    assert handle.get_status() is RunStatus.FINISHED
    assert handle.logs() == b"done\n"
    assert submitted.get_status() is RunStatus.FINISHED  # the store says so: closed once


def test_the_job_logs_into_the_run_through_the_shared_file_system(
    slurm_cluster: str, tmp_path: Path
) -> None:
    path = project(
        tmp_path,
        "reprorun log metric loss 0.25 --step 1 && reprorun log param where slurm"
        ' && python -c "import reprorun; print(reprorun.__name__)"',
    )
    submitted = run_slurm(path, slurm_cluster)
    run = stored(submitted.run_id)
    assert run.info.status is RunStatus.FINISHED
    assert run.data.metrics == {"loss": 0.25}
    assert run.data.params["where"] == "slurm"
    assert stored_log(submitted.run_id) == "reprorun\n"


def test_a_job_sbatch_refuses_fails_the_run_with_sbatchs_words(
    slurm_cluster: str, tmp_path: Path
) -> None:
    path = project(tmp_path, "true")
    with pytest.raises(ExecutionError, match="Invalid partition name specified"):
        run_slurm(path, "no-such-partition")
    (run,) = open_store().search_runs(["0"])
    assert run.info.status is RunStatus.FAILED
    reason = run.data.tags[FAILURE_TAG]
    assert "sbatch said: sbatch: error: invalid partition specified: no-such-partition" in reason
    assert "Check 'partition' in the backend config (`sinfo -s` lists the partitions)" in reason


def test_without_sbatch_the_run_fails_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = project(tmp_path, "true")
    bin_dir = tmp_path / "bin"  # git and bash only: no Slurm commands
    bin_dir.mkdir()
    for tool in ("git", "bash"):
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ExecutionError, match="the Slurm command 'sbatch' is not on PATH"):
        run_slurm(path, "debug")
    (run,) = open_store().search_runs(["0"])
    assert run.info.status is RunStatus.FAILED
    assert "Run reprorun where Slurm's client commands are installed" in run.data.tags[FAILURE_TAG]


def test_cli_run_with_a_config_file(slurm_cluster: str, tmp_path: Path) -> None:
    path = project(tmp_path, 'echo "from the cli: $WHO"')
    config = tmp_path / "cluster.yaml"
    config.write_text(
        yaml.safe_dump({"partition": slurm_cluster, "time": "00:05:00", "env_vars": {"WHO": "me"}})
    )
    done = reprorun_cli(
        "run", str(path), "--backend", "slurm", "--backend-config", str(config),
        "--env-manager", "local", timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "from the cli: me" in done.stdout
    (run,) = open_store().search_runs(["0"])
    assert run.info.status is RunStatus.FINISHED
    logs = reprorun_cli("runs", "logs", run.info.run_id, timeout=60)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "from the cli: me\n"


def test_a_file_store_is_explained_and_a_server_uri_reaches_the_job(
    slurm_cluster: str, tmp_path: Path
) -> None:
    """The embedded store works here because the job shares this file system: reprorun says
    so when it submits. With tracking_uri in the config, the job gets that URI instead."""
    path = project(tmp_path, 'echo "uri=$REPRORUN_TRACKING_URI mlflow=$MLFLOW_TRACKING_URI"')
    warnings: list[str] = []
    submitted = run_slurm(path, slurm_cluster, on_warning=warnings.append)
    assert any(
        "a file: that works only when the job runs on this machine or a file system shared" in w
        and "reprorun server --host 0.0.0.0" in w
        for w in warnings
    )
    assert "uri=sqlite:///" in stored_log(submitted.run_id)

    config = {"tracking_uri": "http://tracking.example:5000"}
    warnings.clear()
    submitted = run_slurm(path, slurm_cluster, config, on_warning=warnings.append)
    assert not any("works only when" in w for w in warnings)
    log = stored_log(submitted.run_id)
    assert "uri=http://tracking.example:5000 mlflow=http://tracking.example:5000" in log


def test_a_node_python_without_reprorun_imports_the_shipped_client(
    slurm_cluster: str, home: Path, tmp_path: Path
) -> None:
    """A project with no declared environment on a node whose Python has no reprorun (here a
    venv without it, put first on PATH by a setup line, as `module load python` would)."""
    venv = tmp_path / "node-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    lacks = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import reprorun"], capture_output=True, timeout=60
    )
    assert b"No module named 'reprorun'" in lacks.stderr
    path = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    command: python train.py\n",
        {
            "train.py": "import sys\nimport reprorun\n\nprint('python=' + sys.executable)\n"
            "print('client=' + reprorun.__file__)\nreprorun.log_metric('loss', 0.25)\n"
        },
    )
    submitted = reprorun.projects.run(
        str(path),
        backend="slurm",
        backend_config={
            "partition": slurm_cluster,
            "time": "5",
            "setup": [f"export PATH={venv}/bin:$PATH"],
        },
        echo=False,
    )
    log = stored_log(submitted.run_id)
    assert submitted.get_status() is RunStatus.FINISHED, log
    assert stored(submitted.run_id).data.metrics["loss"] == 0.25
    assert f"python={venv}/bin/python" in log
    job_folder = home / "slurm" / submitted.run_id
    assert f"client={job_folder / 'client' / 'reprorun' / '__init__.py'}" in log, log


# --- why a job ended (issue 18) ------------------------------------------------------------


@pytest.mark.slow
def test_timeout_becomes_slurms_time_limit_and_ends_the_run_timeout(
    slurm_cluster: str, tmp_path: Path
) -> None:
    """--timeout 5 s is Slurm's --time, which keeps whole minutes: the job ends TIMEOUT after
    about a minute (slurmctld checks the limits every 30 s)."""
    path = project(tmp_path, "echo started; sleep 300")
    began = time.monotonic()
    with pytest.raises(RunFailed) as excinfo:
        run_slurm(path, slurm_cluster, timeout=5)
    took = time.monotonic() - began
    run = stored(excinfo.value.run_id)
    tags = run.data.tags
    assert run.info.status is RunStatus.FAILED
    assert tags[SystemTags.EXIT_REASON] == "timeout"
    assert tags[SystemTags.EXIT_DETAIL].startswith("TIMEOUT Reason=TimeLimit")
    assert scontrol_state(tags[JOB_ID_TAG]) == "TIMEOUT"
    folder = Path(json.loads(tags[CONFIG_TAG])["jobs_dir"]) / run.info.run_id
    assert "#SBATCH --time=0-00:00:05\n" in (folder / "job.sh").read_text()
    assert 55 < took < 180, took


def test_a_command_killed_by_sigkill_keeps_the_signal(slurm_cluster: str, tmp_path: Path) -> None:
    """What the OOM killer does to a command: this cluster does not enforce --mem
    (TaskPlugin=task/none, no jobacct_gather), so Slurm's OUT_OF_MEMORY cannot happen here
    (its sacct/scontrol shapes are unit-tested); the SIGKILL it would send is kept."""
    path = project(tmp_path, "echo started; kill -9 $$")
    with pytest.raises(RunFailed) as excinfo:
        run_slurm(path, slurm_cluster, {"mem": "50M"})
    tags = stored(excinfo.value.run_id).data.tags
    assert tags[SystemTags.EXIT_REASON] == "code-error"
    assert tags[SystemTags.EXIT_SIGNAL] == "SIGKILL"
    assert tags[SystemTags.EXIT_CODE] == "137"
    assert tags[SystemTags.EXIT_DETAIL] == "FAILED Reason=NonZeroExitCode ExitCode=137:0"


def test_a_job_requeued_by_scontrol_ends_the_run_preempted_and_is_cancelled(
    slurm_cluster: str, tmp_path: Path
) -> None:
    """scontrol requeue (what preemption with PreemptMode=REQUEUE does): that attempt ended;
    the job would run again into the same run, so reprorun cancels it (a retry is a new
    run)."""
    submitted = started_job(tmp_path, slurm_cluster)
    subprocess.run(["scontrol", "requeue", submitted.job_id], check=True, timeout=60)
    until(lambda: submitted.get_status().is_terminal, 30, "the run to end")
    run = stored(submitted.run_id)
    tags = run.data.tags
    assert run.info.status is RunStatus.FAILED
    assert tags[SystemTags.EXIT_REASON] == "preempted"
    assert tags[SystemTags.EXIT_DETAIL].endswith("(requeued)")
    assert f"Slurm requeued job {submitted.job_id}" in tags[FAILURE_TAG]
    until(lambda: scontrol_state(submitted.job_id) == "CANCELLED", 30, "the requeued job to go")
