"""Retries by class (projects/retry.py): parsing, the decision, the backoff, the memory raise,
and the loop over a real store with a stand-in for the run pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reprorun.backends.base import SubmittedRun
from reprorun.config import resolve_tracking
from reprorun.errors import ExecutionError, RunFailed, UserInputError
from reprorun.projects.request import RunRequest
from reprorun.projects.retry import (
    DEFAULT_CLASSES,
    MAX_ATTEMPTS_TAG,
    RetryPolicy,
    parse_memory_factor,
    parse_retry_on,
    raise_memory,
    run_attempts,
)
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags, now_ms
from reprorun.tracking.store import open_store

E = ExitReason


def test_retry_on_defaults_to_the_infrastructure_classes() -> None:
    assert parse_retry_on(None) == (E.PREEMPTED, E.NODE_LOST, E.LAUNCH_ERROR)
    assert all(reason.is_infrastructure for reason in DEFAULT_CLASSES)


def test_retry_on_takes_named_classes_including_code_error() -> None:
    assert parse_retry_on("timeout, out-of-memory,timeout") == (E.TIMEOUT, E.OUT_OF_MEMORY)
    assert parse_retry_on(["code-error"]) == (E.CODE_ERROR,)


@pytest.mark.parametrize("text", ["succeeded", "cancelled", "oom", "", " , "])
def test_retry_on_refuses_what_cannot_be_retried(text: str) -> None:
    with pytest.raises(UserInputError, match="--retry-on"):
        parse_retry_on(text)


def test_memory_factor() -> None:
    assert parse_memory_factor("x2") == 2
    assert parse_memory_factor("1.5x") == 1.5
    assert parse_memory_factor("3") == 3
    assert parse_memory_factor(None) is None
    for bad in ("x1", "x0.5", "lots", "xinf"):
        with pytest.raises(UserInputError, match="--retry-memory"):
            parse_memory_factor(bad)


def test_only_the_classes_asked_are_retried_and_only_so_many_times() -> None:
    policy = RetryPolicy(retries=2)
    assert policy.should_retry(1, E.PREEMPTED) and policy.should_retry(2, E.LAUNCH_ERROR)
    assert not policy.should_retry(3, E.PREEMPTED)  # the third attempt was the last
    for reason in (E.CODE_ERROR, E.OUT_OF_MEMORY, E.TIMEOUT, E.SUCCEEDED, E.CANCELLED, None):
        assert not policy.should_retry(1, reason)
    named = RetryPolicy(retries=1, on=parse_retry_on("code-error"))
    assert named.should_retry(1, E.CODE_ERROR) and not named.should_retry(1, E.PREEMPTED)


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(retries=20)
    assert [policy.delay(n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 320, 600]
    assert policy.delay(1000) == 600
    assert RetryPolicy(backoff=0.01).delay(3) == pytest.approx(0.04)


def test_policy_of_a_request_checks_its_values() -> None:
    policy = RetryPolicy.of(RunRequest(".", retries=2, retry_on=("timeout",), retry_memory=2))
    assert (policy.max_attempts, policy.on, policy.memory_factor) == (3, (E.TIMEOUT,), 2)
    with pytest.raises(UserInputError, match="--retries"):
        RetryPolicy.of(RunRequest(".", retries=-1))
    with pytest.raises(UserInputError, match="--retry-backoff"):
        RetryPolicy.of(RunRequest(".", retries=1, retry_backoff=-1))


def test_the_request_carries_the_policy_to_a_trial_process() -> None:
    request = RunRequest(".", retries=2, retry_on=("timeout",), retry_memory=2, retry_backoff=0.5)
    assert RunRequest.from_json(request.to_json()) == request


def test_memory_is_raised_where_the_backend_has_a_request(tmp_path: Path) -> None:
    assert raise_memory("slurm", {"mem": "4G", "time": "10"}, 2) == (
        {"mem": "8G", "time": "10"},
        "mem 4G -> 8G",
    )
    assert raise_memory("slurm", {"mem": "1500"}, 1.5)[0] == {"mem": "2250"}
    assert raise_memory("ray", {"memory": 1000}, 2)[0] == {"memory": 2000}
    assert raise_memory("slurm", {}, 2) == ({}, None)
    assert raise_memory("local", {"mem": "4G"}, 2) == ({"mem": "4G"}, None)
    template = tmp_path / "job.yaml"
    template.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n"
        "      containers:\n      - name: main\n        image: x\n        resources:\n"
        "          requests: {memory: 512Mi}\n          limits: {memory: 1Gi, cpu: '1'}\n"
    )
    options = {"repository-uri": "registry.local/p", "kube-job-template-path": str(template)}
    raised, what = raise_memory("kubernetes", options, 2)
    container = raised["kube-job-template"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"memory": "1024Mi"},
        "limits": {"memory": "2Gi", "cpu": "1"},
    }
    assert what == "requests.memory 512Mi -> 1024Mi, limits.memory 1Gi -> 2Gi"
    assert "512Mi" in template.read_text()  # the file is left as it is
    beside = {"repository-uri": "registry.local/p", "kube-job-template-path": "job.yaml"}
    raised, what = raise_memory("kubernetes", beside, 2, str(tmp_path / "kubernetes.json"))
    assert what is not None and "limits.memory 1Gi -> 2Gi" in what  # found beside the config


# -- the loop, over a real store


class _Ended(SubmittedRun):
    def __init__(self, run_id: str, status: RunStatus):
        self._run_id, self._status = run_id, status

    @property
    def run_id(self) -> str:
        return self._run_id

    def wait(self) -> bool:
        return self._status is RunStatus.FINISHED

    def get_status(self) -> RunStatus:
        return self._status

    def cancel(self, force: bool = False) -> None:
        pass


class FakePipeline:
    """launch.run_request's part: each call makes a run (with the request's tags) that ends
    with the next reason; a FAILED one raises RunFailed, a launch error ExecutionError."""

    def __init__(self, reasons: list[ExitReason]):
        self.reasons = iter(reasons)
        self.requests: list[RunRequest] = []
        self.store = open_store(resolve_tracking(None).uri)
        self.experiment = self.store.get_or_create_experiment(f"retries-{id(self)}")

    def __call__(
        self, request: RunRequest, *, on_create: Callable[[str], None] | None = None, **_: Any
    ) -> SubmittedRun:
        assert request.retries == 0  # an attempt is one run
        self.requests.append(request)
        reason = next(self.reasons)
        run_id = self.store.create_run(self.experiment, tags=dict(request.tags)).info.run_id
        if on_create:
            on_create(run_id)
        status = {E.SUCCEEDED: RunStatus.FINISHED, E.CANCELLED: RunStatus.KILLED}.get(
            reason, RunStatus.FAILED
        )
        self.store.set_tag(run_id, SystemTags.EXIT_REASON, reason.value)
        self.store.update_run(run_id, status=status, end_time=now_ms())
        if reason is E.LAUNCH_ERROR:
            raise ExecutionError("the cluster could not be reached")
        if status is RunStatus.FAILED:
            raise RunFailed(run_id)
        return _Ended(run_id, status)

    def runs(self) -> list[Any]:
        return sorted(
            self.store.search_runs([self.experiment], max_results=100),
            key=lambda r: int(r.data.tags[SystemTags.ATTEMPT]),
        )


@pytest.fixture
def said() -> Iterator[list[str]]:
    yield []


def _attempts(
    request: RunRequest, pipeline: FakePipeline, said: list[str], waits: list[float]
) -> SubmittedRun:
    def sleep(seconds: float) -> None:
        waits.append(seconds)

    return run_attempts(request, pipeline, on_retry=said.append, sleep=sleep)


def test_attempts_are_runs_linked_to_the_first(home: Path, said: list[str]) -> None:
    pipeline = FakePipeline([E.PREEMPTED, E.LAUNCH_ERROR, E.SUCCEEDED])
    waits: list[float] = []
    request = RunRequest(".", retries=3, retry_backoff=0.5, tags={"team": "a"})
    ended = _attempts(request, pipeline, said, waits)
    first, second, third = pipeline.runs()
    assert ended.run_id == third.info.run_id and ended.get_status() is RunStatus.FINISHED
    assert [r.data.tags[SystemTags.ATTEMPT] for r in (first, second, third)] == ["1", "2", "3"]
    assert all(r.data.tags[MAX_ATTEMPTS_TAG] == "4" for r in (first, second, third))
    assert all(r.data.tags["team"] == "a" for r in (first, second, third))
    assert SystemTags.ATTEMPT_OF not in first.data.tags
    assert second.data.tags[SystemTags.ATTEMPT_OF] == first.info.run_id
    assert third.data.tags[SystemTags.ATTEMPT_OF] == first.info.run_id
    assert waits == [0.5, 1.0]
    assert said == [
        "attempt 1 ended FAILED (preempted); retrying in 0.5s (attempt 2 of 4)",
        "attempt 2 ended FAILED (launch-error); retrying in 1s (attempt 3 of 4)",
    ]


def test_a_code_error_is_not_retried_unless_named(home: Path, said: list[str]) -> None:
    pipeline = FakePipeline([E.CODE_ERROR])
    with pytest.raises(RunFailed) as failed:
        _attempts(RunRequest(".", retries=2), pipeline, said, [])
    assert failed.value.run_id == pipeline.runs()[0].info.run_id
    assert len(pipeline.requests) == 1 and said == []

    pipeline = FakePipeline([E.CODE_ERROR, E.CODE_ERROR])
    request = RunRequest(".", retries=1, retry_on=("code-error",), retry_backoff=0)
    with pytest.raises(RunFailed) as failed:
        _attempts(request, pipeline, said, [])
    assert len(pipeline.requests) == 2
    assert failed.value.run_id == pipeline.runs()[1].info.run_id  # the last attempt's end


def test_cancelled_and_unclassified_ends_are_never_retried(home: Path, said: list[str]) -> None:
    pipeline = FakePipeline([E.CANCELLED])
    request = RunRequest(".", retries=2, retry_on=tuple(r.value for r in DEFAULT_CLASSES))
    assert _attempts(request, pipeline, said, []).get_status() is RunStatus.KILLED
    assert len(pipeline.requests) == 1


def test_the_last_attempts_launch_error_is_raised(home: Path, said: list[str]) -> None:
    pipeline = FakePipeline([E.LAUNCH_ERROR, E.LAUNCH_ERROR])
    with pytest.raises(ExecutionError, match="could not be reached"):
        _attempts(RunRequest(".", retries=1, retry_backoff=0), pipeline, said, [])
    assert len(pipeline.requests) == 2


def test_bad_input_before_any_run_is_not_retried(home: Path, said: list[str]) -> None:
    calls = []

    def refuses(request: RunRequest, **_: Any) -> SubmittedRun:
        calls.append(request)
        raise ExecutionError("no such backend")  # raised before the run exists

    with pytest.raises(ExecutionError):
        run_attempts(RunRequest(".", retries=3), refuses, sleep=lambda _s: None)
    assert len(calls) == 1


def test_a_signal_while_waiting_ends_the_retries(home: Path, said: list[str]) -> None:
    pipeline = FakePipeline([E.PREEMPTED, E.SUCCEEDED])
    with pytest.raises(RunFailed) as failed:
        run_attempts(
            RunRequest(".", retries=1), pipeline, on_retry=said.append, sleep=lambda _s: 15
        )
    assert failed.value.run_id == pipeline.runs()[0].info.run_id
    assert len(pipeline.requests) == 1
    assert said[-1] == "stopped by signal 15 while waiting: attempt 1's end stands"


def test_the_wait_ends_early_on_a_signal() -> None:
    import os
    import signal
    import threading
    import time

    from reprorun.projects.retry import wait_for_retry

    assert wait_for_retry(0.01) is None
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    began = time.monotonic()
    assert wait_for_retry(30) == signal.SIGTERM
    assert time.monotonic() - began < 10


def test_an_oom_retry_raises_the_memory_request(home: Path, said: list[str]) -> None:
    pipeline = FakePipeline([E.OUT_OF_MEMORY, E.OUT_OF_MEMORY, E.SUCCEEDED])
    request = RunRequest(
        ".",
        backend="slurm",
        backend_config={"mem": "1G"},
        retries=2,
        retry_on=("out-of-memory",),
        retry_memory=2,
        retry_backoff=0,
    )
    _attempts(request, pipeline, said, [])
    assert [dict(r.backend_config) for r in pipeline.requests] == [  # type: ignore[arg-type]
        {"mem": "1G"},
        {"mem": "2G"},
        {"mem": "4G"},
    ]
    assert said[0].endswith("(attempt 2 of 3); mem 1G -> 2G")


def test_retries_need_a_synchronous_run(home: Path) -> None:
    with pytest.raises(UserInputError, match="--detach"):
        run_attempts(RunRequest(".", retries=1, synchronous=False), FakePipeline([]))


def test_a_retry_is_notified(home: Path, tmp_path: Path, said: list[str]) -> None:
    import json
    import stat

    heard = tmp_path / "heard.jsonl"
    script = tmp_path / "hear.sh"
    script.write_text(f"#!/bin/sh\ncat >> {heard}\necho >> {heard}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    pipeline = FakePipeline([E.NODE_LOST, E.SUCCEEDED])
    request = RunRequest(".", retries=1, retry_backoff=0, notify=(f"cmd:{script}",))
    _attempts(request, pipeline, said, [])
    events = [json.loads(line) for line in heard.read_text().splitlines() if line.strip()]
    assert [(e["event"], e["run_id"]) for e in events] == [
        ("retry", pipeline.runs()[0].info.run_id)
    ]


def test_a_docker_env_runs_memory_limits_are_raised() -> None:
    from reprorun.projects.retry import raise_docker_memory

    given = ("memory=64m", "memory-swap=128M", "gpus=all", "t", "memory-reservation=1.5g")
    raised, what = raise_docker_memory(given, 2)
    assert raised == ("memory=128m", "memory-swap=256M", "gpus=all", "t", "memory-reservation=3g")
    assert what == (
        "docker memory 64m -> 128m, docker memory-swap 128M -> 256M, "
        "docker memory-reservation 1.5g -> 3g"
    )
    assert raise_docker_memory(("memory-swap=-1", "gpus=all"), 2) == (
        ("memory-swap=-1", "gpus=all"),
        None,
    )
