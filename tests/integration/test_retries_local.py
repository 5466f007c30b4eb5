"""Retries by class with real local runs (issue 18): what is retried is only what was asked,
each attempt is a run of its own linked to the first, and runs list/show group them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reprorun.errors import RunFailed
from reprorun.tracking.entities import RunStatus, SystemTags
from tests.conftest import make_project, reprorun_cli

# Fails the first time (no marker yet), succeeds the next.
FLAKY = """name: flaky
entry_points:
  main:
    parameters:
      marker: {type: string}
    command: "test -f {marker} || {{ touch {marker}; echo first >&2; exit 3; }}"
"""


def _runs(*args: str) -> list[dict]:  # type: ignore[type-arg]
    listed = reprorun_cli("runs", "list", "--json", *args)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)  # type: ignore[no-any-return]


def test_a_launch_error_is_retried_and_the_attempts_are_linked(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", FLAKY)
    # No bash on PATH: the command cannot start, after its run exists (launch-error).
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    done = reprorun_cli(
        "run", str(project), "--env-manager", "local", "-P", f"marker={tmp_path / 'm'}",
        "--retries", "2", "--retry-backoff", "0.01",
        env=env,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "attempt 1 ended FAILED (launch-error); retrying in 0.01s (attempt 2 of 3)" in (
        done.stderr
    )
    assert "attempt 2 ended FAILED (launch-error); retrying in 0.02s (attempt 3 of 3)" in (
        done.stderr
    )
    assert "Could not start the command" in done.stderr  # the last attempt's own error
    listed = _runs()
    assert len(listed) == 1  # one row: the latest attempt
    row = listed[0]
    assert (row["attempt"], row["max_attempts"]) == (3, 3)
    attempts = row["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert {a["exit_reason"] for a in attempts} == {"launch-error"}
    first = attempts[0]["run_id"]
    assert row["attempt_of"] == first and row["info"]["run_id"] == attempts[2]["run_id"]
    every = _runs("--filter", f"tags.`{SystemTags.ATTEMPT_OF}` = '{first}'")
    assert len(every) == 1  # attempts 2+ of the first are found by their link (grouped)
    table = reprorun_cli("runs", "list")
    assert "attempt 3/3" in table.stdout and table.stdout.count("FAILED") == 1
    shown = reprorun_cli("runs", "show", attempts[1]["run_id"], "--log-lines", "0")
    assert "Attempts (3 made, up to 3)" in shown.stdout
    lines = [line.split() for line in shown.stdout.splitlines() if line.startswith("  ")]
    assert ["1", first, "FAILED", "(launch-error)"] in [line[:4] for line in lines]
    assert any(line[1] == attempts[1]["run_id"] and line[-3:] == ["<-", "this", "run"]
               for line in lines if len(line) > 3)  # fmt: skip
    as_json = json.loads(
        reprorun_cli("runs", "show", first, "--json").stdout,
    )
    assert [a["run_id"] for a in as_json["attempts"]] == [a["run_id"] for a in attempts]


def test_a_code_error_is_retried_only_when_named(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", FLAKY)
    marker = tmp_path / "m"
    run = ("run", str(project), "--env-manager", "local", "-P", f"marker={marker}")
    once = reprorun_cli(*run, "--retries", "2", "--retry-backoff", "0.01")
    assert once.returncode == 1 and "retrying" not in once.stderr
    assert len(_runs()) == 1

    marker.unlink()
    named = reprorun_cli(
        *run, "--retries", "2", "--retry-on", "code-error", "--retry-backoff", "0.01"
    )
    assert named.returncode == 0, named.stderr
    assert "attempt 1 ended FAILED (code-error); retrying in 0.01s (attempt 2 of 3)" in (
        named.stderr
    )
    latest = _runs()[0]
    assert latest["info"]["status"] == "FINISHED" and latest["attempt"] == 2
    assert [a["status"] for a in latest["attempts"]] == ["FAILED", "FINISHED"]
    assert "attempt 2/3" in reprorun_cli("runs", "list").stdout


def test_bad_retry_options_are_refused_before_anything_runs(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", FLAKY)
    run = ("run", str(project), "--env-manager", "local", "-P", "marker=x", "--retries", "1")
    for option, words in [
        (("--retry-on", "succeeded"), "not a class that can be retried"),
        (("--retry-memory", "x1"), "a factor above 1"),
        (("--detach",), "does not go with --detach"),
    ]:
        refused = reprorun_cli(*run, *option)
        assert refused.returncode == 2, refused.stderr
        assert words in refused.stderr
    assert _runs() == []


def test_the_python_api_retries(tmp_path: Path, home: Path) -> None:
    import reprorun.projects

    project = make_project(tmp_path / "p", FLAKY)
    said: list[str] = []
    ended = reprorun.projects.run(
        str(project),
        parameters={"marker": str(tmp_path / "m")},
        env_manager="local",
        echo=False,
        retries=1,
        retry_on="code-error",
        retry_backoff=0.01,
        on_retry=said.append,
    )
    assert ended.get_status() is RunStatus.FINISHED
    assert said == ["attempt 1 ended FAILED (code-error); retrying in 0.01s (attempt 2 of 2)"]
    with pytest.raises(RunFailed):  # not named: the first failure stands
        reprorun.projects.run(
            str(project),
            parameters={"marker": str(tmp_path / "m2")},
            env_manager="local",
            echo=False,
            retries=1,
            retry_backoff=0.01,
        )


@pytest.mark.slow
def test_a_sweeps_points_are_retried(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    project = make_project(tmp_path / "p", FLAKY)
    swept = reprorun_cli(
        "sweep", str(project), "-P", f"marker={marker}", "--env-manager", "local",
        "--retries", "1", "--retry-on", "code-error", "--retry-backoff", "0.01",
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr + swept.stdout
    point = next(r for r in _runs() if r["info"]["run_name"].endswith("-1"))
    assert point["info"]["status"] == "FINISHED" and point["attempt"] == 2
    assert point["attempts"][0]["status"] == "FAILED"


@pytest.mark.slow
def test_a_timeout_is_retried_when_named(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "p",
        FLAKY.replace("echo first >&2; exit 3;", "exec sleep 60;"),  # hangs the first time
    )
    marker = tmp_path / "m"
    run = ("run", str(project), "--env-manager", "local", "-P", f"marker={marker}")
    once = reprorun_cli(*run, "--timeout", "1s", "--retries", "1", "--retry-backoff", "0.01")
    assert once.returncode == 1 and "retrying" not in once.stderr  # timeout: not a default
    assert _runs()[0]["data"]["tags"][SystemTags.EXIT_REASON] == "timeout"

    marker.unlink()
    named = reprorun_cli(
        *run, "--timeout", "1s", "--retries", "1", "--retry-on", "timeout",
        "--retry-backoff", "0.01",
    )  # fmt: skip
    assert named.returncode == 0, named.stderr
    assert "attempt 1 ended FAILED (timeout); retrying in 0.01s (attempt 2 of 2)" in named.stderr
    assert _runs()[0]["attempt"] == 2
