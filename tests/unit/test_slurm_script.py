"""The Slurm backend without a cluster: its options, the sbatch script it renders from them,
and how Slurm's job states become run statuses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reprorun.backends.job import JobState
from reprorun.backends.registry import get_backend
from reprorun.backends.slurm.backend import SlurmBackend
from reprorun.backends.slurm.job import SlurmJob, job_state, parse_scontrol
from reprorun.backends.slurm.options import SlurmBackendConfig, sbatch_option, with_timeout
from reprorun.backends.slurm.script import render_script
from reprorun.errors import ExecutionError, UserInputError
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags
from reprorun.tracking.store import open_store

RUN_ID = "0123456789abcdef0123456789abcdef"


def slurm(config: dict[str, Any]) -> SlurmBackend:
    backend = get_backend("slurm", config)
    assert isinstance(backend, SlurmBackend)
    return backend


def render(config: SlurmBackendConfig, **kwargs: Any) -> str:
    args: dict[str, Any] = {
        "run_id": RUN_ID,
        "folder": Path("/shared/slurm") / RUN_ID,
        "command": "python train.py --alpha 0.5",
        "workdir": Path("/shared/slurm") / RUN_ID / "src",
        "env": {"REPRORUN_RUN_ID": RUN_ID},
    }
    args.update(kwargs)
    return render_script(config, **args)


def sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH ")]


# --- options ---------------------------------------------------------------------------------


def test_every_option_becomes_its_sbatch_line() -> None:
    config = SlurmBackendConfig(
        partition="gpu",
        nodes=2,
        cpus_per_task=8,
        gpus="a100:2",
        mem="32G",
        time="1-12:00:00",
        account="proj42",
        qos="high",
        job_name="train",
        sbatch_lines=["#SBATCH --constraint=ib", "--exclusive", "  #SBATCH   --mail-type=END  "],
    )
    assert sbatch_lines(render(config)) == [
        "#SBATCH --job-name=train",
        f'#SBATCH --output="/shared/slurm/{RUN_ID}/job.log"',
        f'#SBATCH --chdir="/shared/slurm/{RUN_ID}"',
        "#SBATCH --export=NONE",
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gpus=a100:2",
        "#SBATCH --mem=32G",
        "#SBATCH --time=1-12:00:00",
        "#SBATCH --account=proj42",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=ib",
        "#SBATCH --exclusive",
        "#SBATCH --mail-type=END",
    ]


def test_defaults_leave_resources_to_the_cluster() -> None:
    script = render(SlurmBackendConfig(gpus=1))
    assert script.startswith("#!/bin/bash\n")
    assert sbatch_lines(script) == [
        "#SBATCH --job-name=reprorun-01234567",
        f'#SBATCH --output="/shared/slurm/{RUN_ID}/job.log"',
        f'#SBATCH --chdir="/shared/slurm/{RUN_ID}"',
        "#SBATCH --export=NONE",
        "#SBATCH --gpus=1",
    ]


def test_script_exports_only_the_jobs_variables_and_keeps_the_exit_code(tmp_path: Path) -> None:
    """Run the rendered script with bash (no Slurm): variables arrive intact, PATH starts with
    the built environment, setup and modules run first, the command's exit code is the
    script's and is written down for when Slurm forgets the job."""
    (tmp_path / "bin").mkdir()
    module = tmp_path / "bin" / "module"
    module.write_text('#!/bin/sh\necho "module $*"\n')
    module.chmod(0o755)
    (tmp_path / "src" / "sub").mkdir(parents=True)
    tricky = 'it\'s "quoted" $HOME `x`\nsecond line'
    script = render(
        SlurmBackendConfig(modules=["cuda/12.2"], setup=["echo setup-ran"]),
        folder=tmp_path,
        workdir=tmp_path / "src" / "sub",
        command='printf "%s|" "$TRICKY" "$(pwd)" "${PATH%%:*}"; exit 3',
        env={"TRICKY": tricky},
        path=[str(tmp_path / "bin")],
    )
    (tmp_path / "job.sh").write_text(script)
    done = subprocess.run(
        ["bash", str(tmp_path / "job.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "SLURM_JOB_ID": "77"},
    )
    assert done.returncode == 3
    assert done.stdout.splitlines()[:2] == ["module load cuda/12.2", "setup-ran"]
    assert f"{tricky}|{tmp_path / 'src' / 'sub'}|{tmp_path / 'bin'}|" in done.stdout
    assert (tmp_path / "exit_code").read_text() == "77 3\n"


def test_the_shipped_client_comes_first_on_pythonpath_after_the_setup(tmp_path: Path) -> None:
    """A setup line that loads a Python (and sets PYTHONPATH) still leaves reprorun's client
    importable: it goes first, before what the node and the setup gave."""
    script = render(
        SlurmBackendConfig(setup=['export PYTHONPATH="/from/setup${PYTHONPATH:+:$PYTHONPATH}"']),
        folder=tmp_path,
        workdir=tmp_path,
        command='echo "$PYTHONPATH"',
        env={"PYTHONPATH": "/from/the/run"},
        pythonpath=[str(tmp_path / "client")],
    )
    (tmp_path / "job.sh").write_text(script)
    done = subprocess.run(
        ["bash", str(tmp_path / "job.sh")], capture_output=True, text=True, timeout=30
    )
    assert done.stdout == f"{tmp_path / 'client'}:/from/setup:/from/the/run\n"


def test_a_failing_setup_step_ends_the_job_before_the_command(tmp_path: Path) -> None:
    script = render(
        SlurmBackendConfig(setup=["false"]), folder=tmp_path, workdir=tmp_path, command="echo ran"
    )
    (tmp_path / "job.sh").write_text(script)
    done = subprocess.run(["bash", str(tmp_path / "job.sh")], capture_output=True, timeout=30)
    assert done.returncode == 1
    assert b"ran" not in done.stdout


@pytest.mark.parametrize(
    "value", ["30", "30:00", "01:00:00", "2-0", "2-12:30", "2-12:30:00", "UNLIMITED"]
)
def test_slurm_time_formats_are_accepted(value: str) -> None:
    assert slurm({"time": value}).config.time == value


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"partitoin": "debug"},
            "'partitoin' is not an option of the slurm backend. Did you mean 'partition'?",
        ),
        ({"nodes": "2"}, "option 'nodes' of the slurm backend must be an integer, got '2' (str)"),
        ({"nodes": 0}, "Slurm backend option 'nodes' must be an integer >= 1, got 0"),
        ({"cpus_per_task": -1}, "'cpus_per_task' must be an integer >= 1"),
        ({"gpus": 0}, "'gpus' must be an integer >= 1"),
        ({"gpus": "a100"}, "'gpus' must be a count or 'type:count'"),
        ({"gpus": 1.5}, "option 'gpus' of the slurm backend must be an integer or a string"),
        ({"mem": "4 GB"}, "'mem' must be a size such as '4G'"),
        ({"time": "1h"}, "'time' must be a Slurm time limit"),
        ({"time": "1:2:3:4"}, "'time' must be a Slurm time limit"),
        ({"partition": "a b"}, "'partition' must be a name without spaces"),
        ({"job_name": "x;rm"}, "'job_name' must be a name without spaces"),
        (
            {"sbatch_lines": "--exclusive"},
            "'sbatch_lines' of the slurm backend must be a list of strings",
        ),
        ({"sbatch_lines": ["exclusive"]}, "'sbatch_lines' must be '#SBATCH --option=value' lines"),
        ({"sbatch_lines": ["--exclusive\n--x"]}, "'sbatch_lines' must be '#SBATCH"),
        (
            {"sbatch_lines": ["#SBATCH --output=/tmp/x"]},
            "sets --output, which reprorun sets itself",
        ),
        ({"sbatch_lines": ["-e /tmp/err"]}, "sets --error, which reprorun sets itself"),
        ({"sbatch_lines": ["--export=ALL"]}, "sets --export"),
        ({"sbatch_lines": ["--array=1-4"]}, "sets --array"),
        ({"modules": ["cuda; rm -rf"]}, "'modules' must be module names"),
        ({"env_vars": {"A-B": "1"}}, "'env_vars' must be variable names"),
        (
            {"env_vars": {"A": 1}},
            "'env_vars' of the slurm backend must be a mapping of names to strings",
        ),
        ({"tracking_uri": "localhost:5000"}, "tracking_uri must be a URI"),
        ({"jobs_dir": " "}, "'jobs_dir' must be a folder"),
        ({"jobs_dir": '/tmp/a"b'}, "'jobs_dir' must be a folder without"),
    ],
)
def test_bad_options_are_refused_naming_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(UserInputError) as excinfo:
        get_backend("slurm", config)
    assert message in str(excinfo.value)


def test_jobs_dir_is_resolved_so_another_process_finds_the_same_folder(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert slurm({}).jobs_dir == home / "slurm"
    monkeypatch.chdir(tmp_path)
    backend = slurm({"jobs_dir": "jobs"})
    assert backend.jobs_dir == tmp_path / "jobs"
    assert f'"jobs_dir": "{tmp_path / "jobs"}"' in backend.options_json()
    assert backend.remote and backend.shares_filesystem is True


# --- states ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("PENDING", RunStatus.SCHEDULED),
        ("CONFIGURING", RunStatus.SCHEDULED),
        ("REQUEUED", RunStatus.FAILED),  # that attempt ended (issue 18): preempted
        ("REQUEUE_HOLD", RunStatus.FAILED),
        ("RUNNING", RunStatus.RUNNING),
        ("COMPLETING", RunStatus.RUNNING),
        ("SUSPENDED", RunStatus.RUNNING),
        ("COMPLETED", RunStatus.FINISHED),
        ("CANCELLED", RunStatus.KILLED),
        ("CANCELLED by 1000", RunStatus.KILLED),
        ("FAILED", RunStatus.FAILED),
        ("NODE_FAIL", RunStatus.FAILED),
        ("TIMEOUT", RunStatus.FAILED),
        ("OUT_OF_MEMORY", RunStatus.FAILED),
        ("BOOT_FAIL", RunStatus.FAILED),
        ("DEADLINE", RunStatus.FAILED),
        ("PREEMPTED", RunStatus.FAILED),
    ],
)
def test_slurm_states_map_to_run_statuses(state: str, status: RunStatus) -> None:
    assert job_state("12", state).status is status


def test_failures_carry_the_state_reason_and_exit_code() -> None:
    failed = job_state("12", "FAILED", "NonZeroExitCode", "3:0")
    assert failed == JobState(
        RunStatus.FAILED,
        "Slurm job 12 ended FAILED (NonZeroExitCode, exit code 3)",
        3,
        ExitReason.CODE_ERROR,
        "FAILED Reason=NonZeroExitCode ExitCode=3:0",
    )
    timeout = job_state("12", "TIMEOUT", "TimeLimit", "0:15")
    assert timeout.reason == "Slurm job 12 ended TIMEOUT (TimeLimit, killed by signal 15)"
    assert timeout.exit_code is None
    oom = job_state("12", "OUT_OF_MEMORY", "None", "0:125")
    assert oom.reason == "Slurm job 12 ended OUT_OF_MEMORY (killed by signal 125)"
    assert job_state("12", "COMPLETED", "None", "0:0") == JobState(
        RunStatus.FINISHED, None, 0, ExitReason.SUCCEEDED, "COMPLETED ExitCode=0:0"
    )
    killed = job_state("12", "CANCELLED", "None", "0:15")
    assert killed.status is RunStatus.KILLED and killed.reason and "job 12" in killed.reason


def test_scontrol_record_is_parsed() -> None:
    text = (
        "JobId=5 JobName=reprorun-0123 UserId=root(0) JobState=FAILED Reason=NonZeroExitCode "
        "Dependency=(null) ExitCode=3:0 RunTime=00:00:01 Command=/a b/job.sh StdOut=/a b/job.log"
    )
    assert parse_scontrol(text) == {
        "JobState": "FAILED",
        "Reason": "NonZeroExitCode",
        "ExitCode": "3:0",
    }
    assert parse_scontrol("") == {}


# sacct -n -P -X -o State,Reason,ExitCode lines as Slurm 22.05 writes them, and scontrol's
# JobState/Reason/ExitCode/Restarts of a job put back in the queue.
@pytest.mark.parametrize(
    ("line", "restarts", "reason", "signal", "code"),
    [
        ("COMPLETED|None|0:0", 0, ExitReason.SUCCEEDED, None, 0),
        ("FAILED|NonZeroExitCode|3:0", 0, ExitReason.CODE_ERROR, None, 3),
        ("FAILED|NonZeroExitCode|137:0", 0, ExitReason.CODE_ERROR, "SIGKILL", 137),
        ("OUT_OF_MEMORY|OutOfMemory|0:125", 0, ExitReason.OUT_OF_MEMORY, None, None),
        ("TIMEOUT|TimeLimit|0:15", 0, ExitReason.TIMEOUT, "SIGTERM", None),
        ("DEADLINE|DeadLine|0:15", 0, ExitReason.TIMEOUT, "SIGTERM", None),
        ("PREEMPTED|None|0:15", 0, ExitReason.PREEMPTED, "SIGTERM", None),
        ("NODE_FAIL|NodeDown|1:0", 0, ExitReason.NODE_LOST, None, 1),
        ("BOOT_FAIL|None|0:0", 0, ExitReason.NODE_LOST, None, 0),
        ("CANCELLED by 1000|None|0:15", 0, ExitReason.CANCELLED, "SIGTERM", None),
        ("REQUEUED|None|0:15", 0, ExitReason.PREEMPTED, None, None),
        ("PENDING|BeginTime|0:0", 1, ExitReason.PREEMPTED, None, None),
        ("PENDING|NodeDown|0:0", 1, ExitReason.NODE_LOST, None, None),
    ],
)
def test_each_slurm_end_is_classified_with_slurms_words(
    line: str, restarts: int, reason: ExitReason, signal: str | None, code: int | None
) -> None:
    state, why, exit_code = line.split("|")
    ended = job_state("12", state, why, exit_code, restarts)
    assert ended.status.is_terminal
    tags = ended.end_tags()
    assert tags[SystemTags.EXIT_REASON] == reason.value
    assert tags[SystemTags.EXIT_DETAIL].startswith(state)  # Slurm's own words, first
    assert tags.get(SystemTags.EXIT_SIGNAL) == signal
    assert tags.get(SystemTags.EXIT_CODE) == (None if code is None else str(code))


def test_a_pending_job_never_requeued_is_only_waiting() -> None:
    assert job_state("12", "PENDING", "Resources", "0:0", 0) == JobState(RunStatus.SCHEDULED)


def test_scontrol_restarts_say_the_job_was_requeued() -> None:
    text = (
        "JobId=7 JobName=reprorun-0123 JobState=PENDING Reason=BeginTime Dependency=(null) "
        "Requeue=1 Restarts=1 BatchFlag=1 Reboot=0 ExitCode=0:0"
    )
    assert parse_scontrol(text)["Restarts"] == "1"


def test_a_forgotten_job_is_judged_by_its_exit_code_file(tmp_path: Path) -> None:
    job = SlurmJob(RUN_ID, "41", open_store(), "", tmp_path)
    gone = job._forgotten()
    assert gone.status is RunStatus.FAILED
    assert gone.reason and "Slurm job 41 is unknown to squeue, scontrol and sacct" in gone.reason
    (tmp_path / "exit_code").write_text("41 0\n")
    assert job._forgotten().status is RunStatus.FINISHED
    (tmp_path / "exit_code").write_text("41 2\n")
    assert job._forgotten() == JobState(
        RunStatus.FAILED,
        job._forgotten().reason,
        2,
        detail="exit code 2 (from exit_code; Slurm has forgotten the job)",
    )
    (tmp_path / "exit_code").write_text("40 0\n")  # another job's (a requeue, a resubmit)
    assert job._forgotten().status is RunStatus.FAILED


# --- following a job, with stand-ins for Slurm's commands -------------------------------------


def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **commands: str) -> None:
    """Put shell stand-ins for Slurm commands first on PATH (the real cluster is tested in
    tests/engines/test_slurm.py; these reach the answers it cannot give here)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for name, body in commands.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


UNKNOWN = "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1"


def test_an_unreachable_controller_raises_and_leaves_the_run_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_slurm(
        tmp_path,
        monkeypatch,
        squeue="echo 'slurm_load_jobs error: Unable to contact slurm controller "
        "(connect failure)' >&2; exit 1",
    )
    store = open_store()
    run = store.create_run("0")
    job = SlurmJob(run.info.run_id, "41", store, run.info.artifact_uri, tmp_path)
    with pytest.raises(ExecutionError) as excinfo:
        job.get_status()
    assert "squeue said: slurm_load_jobs error: Unable to contact slurm controller" in str(
        excinfo.value
    )
    assert "check `scontrol ping`" in str(excinfo.value)
    assert store.get_run(run.info.run_id).info.status is RunStatus.RUNNING


def test_a_job_only_accounting_remembers_is_read_from_sacct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_slurm(
        tmp_path,
        monkeypatch,
        squeue=UNKNOWN,
        scontrol=UNKNOWN,
        sacct='[ "$5" = 41 ] && echo "OUT_OF_MEMORY|None|0:125"',
    )
    job = SlurmJob(RUN_ID, "41", open_store(), "", tmp_path)
    assert job._state() == JobState(
        RunStatus.FAILED,
        "Slurm job 41 ended OUT_OF_MEMORY (killed by signal 125)",
        exit_reason=ExitReason.OUT_OF_MEMORY,
        detail="OUT_OF_MEMORY ExitCode=0:125",
    )


def test_without_accounting_a_forgotten_job_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_slurm(
        tmp_path,
        monkeypatch,
        squeue="exit 0",  # some Slurm versions answer nothing rather than an error
        scontrol=UNKNOWN,
        sacct="echo 'Slurm accounting storage is disabled' >&2; exit 1",
    )
    job = SlurmJob(RUN_ID, "41", open_store(), "", tmp_path)
    state = job._state()
    assert state.status is RunStatus.FAILED
    assert state.reason and state.reason.startswith("Slurm job 41 is unknown to squeue")


@pytest.mark.parametrize(
    "line", ["-o/tmp/x", "#SBATCH -e /tmp/e", "--out=/tmp/x", "--chd=/tmp", "--arr=1-3"]
)
def test_reserved_options_are_refused_short_glued_or_abbreviated(line: str) -> None:
    with pytest.raises(UserInputError, match="which reprorun sets itself"):
        sbatch_option(line)


@pytest.mark.parametrize("line", ["--exclusive", "-N 2", "--mem-per-cpu=2G", "--time=5"])
def test_other_options_pass(line: str) -> None:
    assert sbatch_option(line) == line


@pytest.mark.parametrize(
    ("own", "timeout", "expected"),
    [
        (None, None, None),
        (None, 75.0, "0-00:01:15"),  # Slurm keeps whole minutes: 2 min, rounded up
        (None, 90061.0, "1-01:01:01"),
        ("5", 60.0, "0-00:01:00"),  # --timeout is shorter than the config's 5 minutes
        ("5", 600.0, "5"),  # the config's own limit is shorter: kept
        ("2-00:00:00", 3600.0, "0-01:00:00"),
        ("UNLIMITED", 30.0, "0-00:00:30"),
    ],
)
def test_timeout_becomes_slurms_time_limit_when_shorter(
    own: str | None, timeout: float | None, expected: str | None
) -> None:
    config = with_timeout(SlurmBackendConfig(time=own), timeout)
    assert config.time == expected
    script = render_script(
        config, run_id=RUN_ID, folder=Path("/j"), command="true", workdir=Path("/j"), env={}
    )
    assert (f"#SBATCH --time={expected}" in script) is (expected is not None)
