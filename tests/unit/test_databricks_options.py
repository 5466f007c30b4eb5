"""The databricks backend's options, credentials, state mapping and what it ships, without a
workspace (tests/integration/test_databricks_backend.py drives a fake one)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from reprorun.backends.databricks.backend import DatabricksBackend
from reprorun.backends.databricks.credentials import credentials
from reprorun.backends.databricks.job import exit_code_of, job_state
from reprorun.backends.databricks.payload import lock_libraries, pack_tree, run_timeout
from reprorun.backends.registry import get_backend
from reprorun.errors import ExecutionError, UserInputError
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags

SPEC = {"spark_version": "15.4.x-scala2.12", "num_workers": 1, "node_type_id": "i3.xlarge"}


@pytest.fixture(autouse=True)
def no_databricks_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DATABRICKS_* from the outside, and a home without ~/.databrickscfg."""
    for key in list(os.environ):
        if key.startswith("DATABRICKS_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", "https://adb-1.2.azuredatabricks.net")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-secret")


def backend(config: dict[str, Any]) -> DatabricksBackend:
    got = get_backend("databricks", config, "cluster-spec.json")
    assert isinstance(got, DatabricksBackend)
    return got


# --- options -------------------------------------------------------------------------------


def test_mlflow_cluster_spec_is_the_new_cluster(token_env: None) -> None:
    b = backend(
        {**SPEC, "spark_conf": {"spark.speculation": "true"}, "tracking_uri": "http://t:5000"}
    )
    assert b.config.cluster() == {**SPEC, "spark_conf": {"spark.speculation": "true"}}
    assert b.tracking_uri == "http://t:5000"
    assert b.remote and b.shares_filesystem is False
    stored = json.loads(b.options_json())
    assert stored["spark_version"] == SPEC["spark_version"]
    assert "dapi-secret" not in b.options_json()  # credentials are never kept with the run
    # What attach() does in another process: the stored options build the same backend.
    assert backend(stored).config == b.config


def test_mlflow_new_cluster_form_with_libraries(token_env: None) -> None:
    libraries = [{"pypi": {"package": "xgboost==2.1.1"}}, {"maven": {"coordinates": "a:b:1"}}]
    b = backend({"new_cluster": {**SPEC, "custom_tags": {"team": "ml"}}, "libraries": libraries})
    assert b.config.cluster() == {**SPEC, "custom_tags": {"team": "ml"}}
    assert b.config.libraries == libraries
    assert backend(json.loads(b.options_json())).config == b.config


@pytest.mark.parametrize(
    "config",
    [
        {
            "spark_version": "15.4.x-scala2.12",
            "policy_id": "ABC123",
        },  # the policy supplies the rest
        {
            "spark_version": "15.4.x-scala2.12",
            "instance_pool_id": "p",
            "autoscale": {"min_workers": 1, "max_workers": 4},
        },
        {
            "spark_version": "15.4.x-scala2.12",
            "node_type_id": "m5.large",
            "num_workers": 0,
            "is_single_node": True,
            "kind": "CLASSIC_PREVIEW",
        },
        {
            **SPEC,
            "aws_attributes": {"availability": "SPOT_WITH_FALLBACK", "first_on_demand": 1},
            "data_security_mode": "SINGLE_USER",
            "init_scripts": [{"workspace": {"destination": "/x.sh"}}],
            "timeout_seconds": 3600,
            "env_vars": {"DATA": "s3://b"},
        },
    ],
)
def test_documented_cluster_keys_are_accepted(token_env: None, config: dict[str, Any]) -> None:
    assert backend(config).config.cluster()["spark_version"] == "15.4.x-scala2.12"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {**SPEC, "num_worker": 2},
            "'num_worker' is not an option of the databricks backend. Did you mean 'num_workers'?",
        ),
        (
            {**SPEC, "num_workers": "2"},
            "option 'num_workers' of the databricks backend must be an integer, got '2' (str)",
        ),
        ({**SPEC, "num_workers": -1}, "num_workers must be an integer >= 0, got -1"),
        (
            {**SPEC, "spark_version": 15.4},
            "option 'spark_version' of the databricks backend must be a string",
        ),
        (
            {**SPEC, "spark_conf": {"spark.x": 1}},
            "'spark_conf' of the databricks backend must be a mapping of names to strings",
        ),
        (
            {**SPEC, "autoscale": {"min_workers": 1, "max_workers": 2}},
            "give num_workers or autoscale, not both",
        ),
        (
            {
                "spark_version": "x",
                "node_type_id": "y",
                "autoscale": {"min_workers": 3, "max_workers": 2},
            },
            "autoscale must be",
        ),
        ({"num_workers": 1, "node_type_id": "y"}, "needs the new cluster's spark_version"),
        (
            {"spark_version": "x", "num_workers": 1},
            "node_type_id (e.g. 'i3.xlarge'; or instance_pool_id)",
        ),
        (
            {},
            "needs the new cluster's spark_version (the runtime, e.g. '15.4.x-scala2.12'); num_workers (or autoscale); node_type_id",
        ),
        (
            {**SPEC, "new_cluster": SPEC},
            "either as top-level keys or inside new_cluster, not both (top-level: spark_version, num_workers, node_type_id)",
        ),
        (
            {"new_cluster": {**SPEC, "nodes": 3}},
            "Backend config cluster-spec.json (new_cluster): 'nodes' is not an option",
        ),
        (
            {"new_cluster": {**SPEC, "num_workers": "3"}},
            "(new_cluster): option 'num_workers' of the databricks backend must be an integer",
        ),
        (
            {"new_cluster": {"spark_version": "x"}},
            "(new_cluster): the databricks backend needs the new cluster's num_workers",
        ),
        (
            {"existing_cluster_id": "0101-abc"},
            "runs each project run on a new cluster (as MLflow does)",
        ),
        ({"new_cluster": {"existing_cluster_id": "0101-abc"}}, "replace existing_cluster_id"),
        (
            {**SPEC, "tracking_uri": "databricks"},
            "is the workspace's own MLflow, which does not hold reprorun's runs",
        ),
        ({**SPEC, "tracking_uri": "databricks://prod"}, "reprorun server --host 0.0.0.0"),
        (
            {**SPEC, "tracking_uri": "store.db"},
            "tracking_uri must be a URI such as http://host:5000",
        ),
        ({**SPEC, "env_vars": {"A-B": "1"}}, "env_vars: 'A-B' is not a variable name"),
        (
            {**SPEC, "env_vars": {"A": 1}},
            "'env_vars' of the databricks backend must be a mapping of names to strings",
        ),
        ({**SPEC, "timeout_seconds": -5}, "timeout_seconds must be an integer >= 0"),
        (
            {**SPEC, "libraries": [{"pypi": {"package": "a"}, "jar": "b"}]},
            "each of libraries must have exactly one of pypi",
        ),
        ({**SPEC, "libraries": [{"pypi": {"repo": "x"}}]}, "a pypi library needs a package"),
        (
            {**SPEC, "libraries": {"pypi": "x"}},
            "'libraries' of the databricks backend must be a list of values",
        ),
        ({**SPEC, "profile": " "}, "profile must name a profile of ~/.databrickscfg"),
    ],
)
def test_bad_options_are_named(token_env: None, config: dict[str, Any], message: str) -> None:
    with pytest.raises(UserInputError) as excinfo:
        backend(config)
    assert message in str(excinfo.value)
    assert "dapi-secret" not in str(excinfo.value)


# --- credentials ---------------------------------------------------------------------------


def write_cfg(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CFG = """\
[DEFAULT]
host = https://default.cloud.databricks.com
token = dapi-default

[prod]
host = prod.cloud.databricks.com/
token = dapi-prod

[sso]
host = https://sso.cloud.databricks.com
auth_type = databricks-cli
"""


def test_environment_variables_first() -> None:
    env = {"DATABRICKS_HOST": "adb-1.2.azuredatabricks.net/", "DATABRICKS_TOKEN": "dapi-xyz"}
    got = credentials(None, env)
    assert (got.host, got.token) == ("https://adb-1.2.azuredatabricks.net", "dapi-xyz")
    assert got.source == "DATABRICKS_HOST and DATABRICKS_TOKEN"
    assert "dapi-xyz" not in repr(got)  # nor in tracebacks that show it


def test_default_profile_of_the_config_file(
    tmp_path: Path, no_databricks_environment: Path
) -> None:
    write_cfg(no_databricks_environment / ".databrickscfg", CFG)
    got = credentials(None, {})
    assert (got.host, got.token) == ("https://default.cloud.databricks.com", "dapi-default")
    assert got.source == f"profile DEFAULT of {no_databricks_environment / '.databrickscfg'}"


def test_named_profile_from_option_or_variable(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path / "cfg", CFG)
    env = {"DATABRICKS_CONFIG_FILE": str(cfg)}
    assert credentials("prod", env).token == "dapi-prod"
    assert credentials("prod", env).host == "https://prod.cloud.databricks.com"
    assert credentials(None, {**env, "DATABRICKS_CONFIG_PROFILE": "prod"}).token == "dapi-prod"
    # A profile named in the backend config is used whole, whatever the shell's variables say.
    shell = {**env, "DATABRICKS_HOST": "https://other", "DATABRICKS_TOKEN": "dapi-other"}
    assert credentials("prod", shell).host == "https://prod.cloud.databricks.com"
    # Otherwise, each variable wins over the profile's key (as the Databricks SDKs do).
    mixed = credentials(None, {**env, "DATABRICKS_HOST": "https://other"})
    assert (mixed.host, mixed.token) == ("https://other", "dapi-default")
    assert mixed.source == f"DATABRICKS_HOST and profile DEFAULT of {cfg}"


def test_default_is_not_merged_into_other_profiles(tmp_path: Path) -> None:
    cfg = write_cfg(
        tmp_path / "cfg", "[DEFAULT]\ntoken = dapi-default\n\n[half]\nhost = h.example\n"
    )
    with pytest.raises(UserInputError, match="found: host from profile half of"):
        credentials("half", {"DATABRICKS_CONFIG_FILE": str(cfg)})


@pytest.mark.parametrize(
    ("profile", "env", "message"),
    [
        (
            None,
            {},
            "No Databricks credentials for the databricks backend (found: nothing). It reads them as the Databricks CLI does: the environment variables DATABRICKS_HOST and DATABRICKS_TOKEN, else the keys host and token of a profile in",
        ),
        (None, {"DATABRICKS_HOST": "h.example"}, "(found: host from DATABRICKS_HOST)"),
        (
            "nope",
            {"DATABRICKS_CONFIG_FILE": "{cfg}"},
            "Databricks profile 'nope' is not in {cfg} (profiles there: DEFAULT, prod, sso)",
        ),
        (
            "sso",
            {"DATABRICKS_CONFIG_FILE": "{cfg}"},
            "signs in with databricks-cli; the databricks backend uses a personal access token",
        ),
        (
            "prod",
            {"DATABRICKS_CONFIG_FILE": "{missing}"},
            "Databricks profile 'prod' was asked for, but {missing} does not exist",
        ),
        (
            None,
            {"DATABRICKS_HOST": "ftp://x", "DATABRICKS_TOKEN": "t"},
            "The Databricks host 'ftp://x' (from DATABRICKS_HOST and DATABRICKS_TOKEN) is not a workspace URL",
        ),
    ],
)
def test_missing_or_unusable_credentials_say_where_they_were_looked_for(
    tmp_path: Path, profile: str | None, env: dict[str, str], message: str
) -> None:
    cfg = write_cfg(tmp_path / "cfg", CFG)
    names = {"cfg": str(cfg), "missing": str(tmp_path / "missing")}
    env = {k: v.format(**names) for k, v in env.items()}
    with pytest.raises(UserInputError) as excinfo:
        credentials(profile, env)
    assert message.format(**names) in str(excinfo.value)


def test_missing_credentials_fail_when_the_backend_is_built() -> None:
    with pytest.raises(UserInputError, match="databricks configure --token"):
        get_backend("databricks", SPEC)


# --- states --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status", "reason"),
    [
        ({"life_cycle_state": "QUEUED"}, RunStatus.SCHEDULED, None),
        (
            {"life_cycle_state": "PENDING", "state_message": "Waiting for cluster"},
            RunStatus.SCHEDULED,
            None,
        ),
        ({"life_cycle_state": "BLOCKED"}, RunStatus.SCHEDULED, None),
        ({"life_cycle_state": "WAITING_FOR_RETRY"}, RunStatus.SCHEDULED, None),
        ({"life_cycle_state": "RUNNING"}, RunStatus.RUNNING, None),
        ({"life_cycle_state": "TERMINATING", "result_state": "SUCCESS"}, RunStatus.RUNNING, None),
        ({"life_cycle_state": "SOMETHING_NEW"}, RunStatus.RUNNING, None),
        ({"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}, RunStatus.FINISHED, None),
        (
            {
                "life_cycle_state": "TERMINATED",
                "result_state": "FAILED",
                "state_message": "Workload failed",
            },
            RunStatus.FAILED,
            "Databricks run 42 ended FAILED: Workload failed",
        ),
        (
            {
                "life_cycle_state": "TERMINATED",
                "result_state": "TIMEDOUT",
                "state_message": "Run timed out",
            },
            RunStatus.FAILED,
            "Databricks run 42 ended TIMEDOUT (timeout_seconds): Run timed out",
        ),
        (
            {
                "life_cycle_state": "TERMINATED",
                "result_state": "CANCELED",
                "state_message": "Run cancelled.",
            },
            RunStatus.KILLED,
            "Databricks run 42 was CANCELED: Run cancelled.",
        ),
        (
            {"life_cycle_state": "TERMINATED", "result_state": "MAXIMUM_CONCURRENT_RUNS_REACHED"},
            RunStatus.FAILED,
            "ended MAXIMUM_CONCURRENT_RUNS_REACHED",
        ),
        (
            {"life_cycle_state": "TERMINATED"},
            RunStatus.FAILED,
            "Databricks run 42 ended without a result",
        ),
        (
            {"life_cycle_state": "SKIPPED", "state_message": "An active run already exists"},
            RunStatus.FAILED,
            "Databricks skipped run 42: An active run already exists",
        ),
        (
            {
                "life_cycle_state": "INTERNAL_ERROR",
                "state_message": "Library installation failed for library due to user error",
            },
            RunStatus.FAILED,
            "Databricks run 42 ended INTERNAL_ERROR: Library installation failed",
        ),
    ],
)
def test_databricks_states_map_to_run_statuses(
    state: dict[str, str], status: RunStatus, reason: str | None
) -> None:
    got = job_state(state, "42")
    assert got.status is status
    if reason is None:
        assert got.reason is None
    else:
        assert got.reason is not None and reason in got.reason


def test_the_tasks_error_and_exit_code_join_a_failure() -> None:
    state = {
        "life_cycle_state": "TERMINATED",
        "result_state": "FAILED",
        "state_message": "Workload failed",
    }
    got = job_state(
        state, "7", "RuntimeError: reprorun: the project's command exited with code 3", 3
    )
    assert got.reason == (
        "Databricks run 7 ended FAILED: Workload failed; "
        "RuntimeError: reprorun: the project's command exited with code 3"
    )
    assert got.exit_code == 3
    assert exit_code_of("a\n[reprorun] the command exited with code 3\n") == 3
    assert exit_code_of("[reprorun] the command exited with code 0\nmore\n") == 0
    assert exit_code_of("no marker: the launcher never ran\n") is None


# runs/get answers of ended runs (state, and the Jobs API 2.1 status.termination_details), with
# the task's error from runs/get-output and the launcher's exit code.
@pytest.mark.parametrize(
    ("state", "termination", "error", "code", "reason", "words"),
    [
        (
            {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS", "state_message": ""},
            {"code": "SUCCESS", "type": "SUCCESS", "message": ""},
            None,
            0,
            ExitReason.SUCCEEDED,
            "SUCCESS",
        ),
        (
            {
                "life_cycle_state": "TERMINATED",
                "result_state": "FAILED",
                "state_message": "Workload failed, see run output for details",
            },
            {"code": "RUN_EXECUTION_ERROR", "type": "CLIENT_ERROR", "message": "Task failed"},
            "RuntimeError: reprorun: the project's command exited with code 3",
            3,
            ExitReason.CODE_ERROR,
            "FAILED; RUN_EXECUTION_ERROR; Task failed",
        ),
        (
            {
                "life_cycle_state": "INTERNAL_ERROR",
                "state_message": "Cluster 0507-101112-abc was terminated. Reason: "
                "DRIVER_OUT_OF_MEMORY (CLIENT_ERROR). Parameters: ...",
            },
            {"code": "CLUSTER_ERROR", "type": "CLIENT_ERROR", "message": "Cluster terminated"},
            None,
            None,
            ExitReason.OUT_OF_MEMORY,
            "DRIVER_OUT_OF_MEMORY",
        ),
        (
            {
                "life_cycle_state": "TERMINATED",
                "result_state": "TIMEDOUT",
                "state_message": "Run timed out",
                "user_cancelled_or_timedout": True,
            },
            {"code": "CANCELED", "type": "SUCCESS", "message": "Run timed out"},
            None,
            None,
            ExitReason.TIMEOUT,
            "TIMEDOUT; CANCELED; Run timed out",
        ),
        (
            {
                "life_cycle_state": "TERMINATED",
                "result_state": "CANCELED",
                "state_message": "Run cancelled.",
                "user_cancelled_or_timedout": True,
            },
            {"code": "USER_CANCELED", "type": "SUCCESS", "message": "Run cancelled."},
            None,
            None,
            ExitReason.CANCELLED,
            "USER_CANCELED",
        ),
        (
            {
                "life_cycle_state": "INTERNAL_ERROR",
                "state_message": "Cluster 0507-101112-abc was terminated. Reason: "
                "SPOT_INSTANCE_TERMINATION (CLOUD_FAILURE).",
            },
            {"code": "CLOUD_FAILURE", "type": "CLOUD_FAILURE", "message": ""},
            None,
            None,
            ExitReason.PREEMPTED,
            "SPOT_INSTANCE_TERMINATION",
        ),
        (
            {
                "life_cycle_state": "INTERNAL_ERROR",
                "state_message": "Could not reach driver of cluster 0507-101112-abc.",
            },
            {"code": "DRIVER_ERROR", "type": "INTERNAL_ERROR", "message": ""},
            None,
            None,
            ExitReason.NODE_LOST,
            "DRIVER_ERROR",
        ),
        (
            {
                "life_cycle_state": "INTERNAL_ERROR",
                "state_message": "Library installation failed for library due to user error",
            },
            {"code": "LIBRARY_INSTALLATION_ERROR", "type": "CLIENT_ERROR", "message": ""},
            None,
            None,
            ExitReason.LAUNCH_ERROR,
            "LIBRARY_INSTALLATION_ERROR",
        ),
        (  # the user's code timed out on its own: its words are not Databricks' timeout
            {"life_cycle_state": "TERMINATED", "result_state": "FAILED", "state_message": ""},
            None,
            "TimeoutError: the request timed out",
            1,
            ExitReason.CODE_ERROR,
            "FAILED",
        ),
    ],
)
def test_each_databricks_end_is_classified_with_databricks_words(
    state: dict[str, Any],
    termination: dict[str, Any] | None,
    error: str | None,
    code: int | None,
    reason: ExitReason,
    words: str,
) -> None:
    got = job_state(state, "42", error, code, termination)
    assert got.status.is_terminal
    tags = got.end_tags()
    assert tags[SystemTags.EXIT_REASON] == reason.value
    assert words in tags[SystemTags.EXIT_DETAIL]


@pytest.mark.parametrize(
    ("own", "timeout", "expected"),
    [
        (None, None, None),
        (600, None, 600),
        (None, 30.2, 31),
        (600, 60, 60),
        (60, 600, 60),
        (0, 5, 5),
    ],
)
def test_timeout_becomes_the_runs_timeout_seconds_when_shorter(
    own: int | None, timeout: float | None, expected: int | None
) -> None:
    assert run_timeout(own, timeout) == expected


# --- what is shipped -----------------------------------------------------------------------


def test_lock_packages_become_pypi_libraries_but_not_the_runtimes_spark() -> None:
    lock = (
        "# reprorun lock: python 3.11.9, uv, from python_env.yaml\n"
        "scikit-learn==1.5.2\nnumpy==2.1.1  # via scikit-learn\n"
        "pyspark==3.5.1\nPy4J==0.10.9.7\n\n"
        "mylib @ git+https://github.com/org/mylib@abc123\n"
    )
    assert lock_libraries(lock) == [
        {"pypi": {"package": "scikit-learn==1.5.2"}},
        {"pypi": {"package": "numpy==2.1.1"}},
        {"pypi": {"package": "mylib @ git+https://github.com/org/mylib@abc123"}},
    ]
    assert lock_libraries(None) == []


def test_packages_from_local_files_are_refused_naming_them() -> None:
    with pytest.raises(
        ExecutionError, match="cannot install: -e /home/me/lib; mine @ file:///tmp/x"
    ):
        lock_libraries("a==1\n-e /home/me/lib\nmine @ file:///tmp/x\n")


def test_project_tarball_is_stable_skips_git_and_keeps_modes_and_links(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / ".git" / "objects").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "MLproject").write_text("name: p\n")
    (root / "sub" / "run.sh").write_text("echo hi\n")
    (root / "sub" / "run.sh").chmod(0o755)
    (root / "link").symlink_to("sub/run.sh")
    (root / "sub" / ".git").write_text("gitdir: ../.git/modules/sub\n")

    first, second = io.BytesIO(), io.BytesIO()
    pack_tree(root, first, "mlflow-project")
    os.utime(root / "MLproject", (1, 1))  # dates do not change the name
    pack_tree(root, second, "mlflow-project")
    assert first.getvalue() == second.getvalue()

    with tarfile.open(fileobj=io.BytesIO(first.getvalue()), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == [
        "mlflow-project/MLproject",
        "mlflow-project/link",
        "mlflow-project/sub",
        "mlflow-project/sub/run.sh",
    ]
    assert members["mlflow-project/sub/run.sh"].mode & 0o111
    assert members["mlflow-project/link"].issym()
    assert members["mlflow-project/link"].linkname == "sub/run.sh"
