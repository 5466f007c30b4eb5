"""Retries by class (issue 18): which ended attempts run again, after how long, and as which run.

A request with ``retries`` N runs up to N + 1 attempts. Each attempt is a run of its own, so
history is never overwritten: every attempt has the tag ``reprorun.attempt`` (1, 2, ...) and
``reprorun.maxAttempts``, and attempts 2+ have ``reprorun.attemptOf``, the first attempt's run
id. An attempt is retried only when its stored exit reason (``reprorun.exitReason``, written
when the run ends) is one of the classes asked for (``preempted,node-lost,launch-error`` unless
told otherwise; ``code-error`` only when named; ``succeeded`` and ``cancelled`` never). The wait
before attempt n + 1 is ``backoff * 2 ** (n - 1)`` seconds, capped at 10 minutes. An
``out-of-memory`` retry may multiply the backend's memory request (Slurm ``mem``, Ray
``memory``, the Kubernetes Job template's ``resources`` memory).

``run_attempts`` is the loop; ``launch.run_request`` calls it when the request asks for
retries, so the CLI, the Python API and a sweep's trials share it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from reprorun.backends.exit_reason import reason_of
from reprorun.errors import ReprorunError, UserInputError
from reprorun.tracking.entities import ExitReason, RunStatus, SystemTags

if TYPE_CHECKING:
    from reprorun.backends.base import SubmittedRun
    from reprorun.projects.request import RunRequest
    from reprorun.tracking.entities import Run
    from reprorun.tracking.store.base import TrackingStore

DEFAULT_CLASSES = (ExitReason.PREEMPTED, ExitReason.NODE_LOST, ExitReason.LAUNCH_ERROR)
NEVER_RETRIED = (ExitReason.SUCCEEDED, ExitReason.CANCELLED)
DEFAULT_BACKOFF_SECONDS = 10.0
BACKOFF_CAP_SECONDS = 600.0
MAX_ATTEMPTS_TAG = "reprorun.maxAttempts"  # on every attempt: retries + 1


def parse_retry_on(value: str | Iterable[str] | None) -> tuple[ExitReason, ...]:
    """The classes ``--retry-on`` names (comma-separated, or a list); None: the defaults."""
    if value is None:
        return DEFAULT_CLASSES
    names = value.split(",") if isinstance(value, str) else list(value)
    retryable = [r.value for r in ExitReason if r not in NEVER_RETRIED]
    classes: list[ExitReason] = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        try:
            reason = ExitReason(name)
        except ValueError:
            reason = None
        if reason is None or reason in NEVER_RETRIED:
            raise UserInputError(
                f"--retry-on: {name!r} is not a class that can be retried; "
                f"choose among {', '.join(retryable)}."
            )
        if reason not in classes:
            classes.append(reason)
    if not classes:
        raise UserInputError(f"--retry-on needs at least one of {', '.join(retryable)}.")
    return tuple(classes)


def parse_memory_factor(value: str | float | None) -> float | None:
    """``--retry-memory``'s factor: ``x2``, ``2`` or ``1.5x``; more than 1."""
    if value is None:
        return None
    text = str(value).strip().lower().removeprefix("x").removesuffix("x")
    try:
        factor = float(text)
    except ValueError:
        factor = 0.0
    if not factor > 1 or factor == float("inf"):
        raise UserInputError(
            f"--retry-memory must be a factor above 1 such as x2 or x1.5, got {value!r}."
        )
    return factor


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, for which classes, how long between them, and the memory factor."""

    retries: int = 0
    on: tuple[ExitReason, ...] = DEFAULT_CLASSES
    memory_factor: float | None = None
    backoff: float = DEFAULT_BACKOFF_SECONDS
    cap: float = BACKOFF_CAP_SECONDS

    @classmethod
    def of(cls, request: RunRequest) -> RetryPolicy:
        """The request's policy, its values checked."""
        if request.retries < 0:
            raise UserInputError(f"--retries must be 0 or more, got {request.retries}.")
        backoff = (
            DEFAULT_BACKOFF_SECONDS if request.retry_backoff is None else request.retry_backoff
        )
        if not 0 <= backoff < float("inf"):
            raise UserInputError(f"--retry-backoff must be 0 or more seconds, got {backoff}.")
        return cls(
            retries=request.retries,
            on=parse_retry_on(request.retry_on),
            memory_factor=parse_memory_factor(request.retry_memory),
            backoff=backoff,
        )

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def should_retry(self, attempt: int, reason: ExitReason | None) -> bool:
        """Whether attempt ``attempt`` (1, 2, ...), ended for ``reason``, runs again."""
        return attempt < self.max_attempts and reason is not None and reason in self.on

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` before the next: doubling, capped."""
        return float(min(self.cap, self.backoff * 2 ** min(attempt - 1, 64)))


def attempt_tags(attempt: int, max_attempts: int, first_run_id: str | None) -> dict[str, str]:
    """The tags linking an attempt to the first one."""
    tags = {SystemTags.ATTEMPT: str(attempt), MAX_ATTEMPTS_TAG: str(max_attempts)}
    if first_run_id is not None and attempt > 1:
        tags[SystemTags.ATTEMPT_OF] = first_run_id
    return tags


# -- raising the memory request of an out-of-memory retry

_SLURM_MEM = re.compile(r"(\d+)([KMGT]?)", re.IGNORECASE)
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)([A-Za-z]*)")


def _times(number: str, factor: float) -> str:
    import math

    return str(math.ceil(float(number) * factor))


def raise_memory(
    backend: str, config: Mapping[str, Any], factor: float, source: str = ""
) -> tuple[dict[str, Any], str | None]:
    """The backend's options with the memory request multiplied by ``factor``, and what was
    raised (None: the backend's options have no memory request to raise). ``source``: the
    file the options came from (a relative template path is looked up beside it too)."""
    options = dict(config)
    if backend == "slurm" and isinstance(options.get("mem"), str):
        match = _SLURM_MEM.fullmatch(options["mem"].strip())
        if match:
            before = options["mem"]
            options["mem"] = _times(match[1], factor) + match[2]
            return options, f"mem {before} -> {options['mem']}"
    if backend == "ray" and isinstance(options.get("memory"), int):
        before = options["memory"]
        options["memory"] = int(_times(str(before), factor))
        return options, f"memory {before} -> {options['memory']}"
    if backend == "kubernetes":
        return _raise_kubernetes(options, factor, source)
    return options, None


_DOCKER_MEMORY_NAMES = ("memory", "m", "memory-swap", "memory-reservation")
_DOCKER_BYTES = re.compile(r"(\d+(?:\.\d+)?)([bkmg]?)", re.IGNORECASE)


def raise_docker_memory(
    docker_args: tuple[str, ...], factor: float
) -> tuple[tuple[str, ...], str | None]:
    """A docker_env run's ``--docker-args`` with its memory limits (memory, memory-swap,
    memory-reservation) multiplied by ``factor``, and what was raised (None: there is none;
    a memory-swap of -1, unlimited, stays)."""
    raised: list[str] = []
    items = []
    for item in docker_args:
        name, eq, value = item.partition("=")
        match = _DOCKER_BYTES.fullmatch(value.strip()) if eq else None
        if name in _DOCKER_MEMORY_NAMES and match:
            item = f"{name}={_times(match[1], factor)}{match[2]}"
            raised.append(f"docker {name} {value} -> {item.partition('=')[2]}")
        items.append(item)
    return tuple(items), ", ".join(raised) or None


def _raise_kubernetes(
    options: dict[str, Any], factor: float, source: str
) -> tuple[dict[str, Any], str | None]:
    """The Job template's containers' memory limits and requests, raised; the template goes
    inline (``kube-job-template``), so the file it came from is left as it is."""
    import copy

    from reprorun.backends.kubernetes.options import KubernetesBackendConfig, load_template

    try:
        parsed = KubernetesBackendConfig(
            repository_uri=str(options.get("repository-uri", "")),
            kube_job_template_path=options.get("kube-job-template-path"),
            kube_job_template=options.get("kube-job-template"),
        )
        template, _file = load_template(parsed, source, "")
    except (ReprorunError, TypeError):
        return options, None
    template = copy.deepcopy(template)
    raised: list[str] = []
    pod = (template.get("spec") or {}).get("template", {}).get("spec") or {}
    for container in pod.get("containers") or []:
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            values = resources.get(kind) or {}
            match = _QUANTITY.fullmatch(str(values.get("memory", "")).strip())
            if match:
                before = values["memory"]
                values["memory"] = _times(match[1], factor) + match[2]
                raised.append(f"{kind}.memory {before} -> {values['memory']}")
    if not raised:
        return options, None
    options["kube-job-template"] = template
    return options, ", ".join(raised)


# -- the loop


@dataclass
class _Outcome:
    run_id: str
    submitted: SubmittedRun | None  # None: the attempt raised ``error``
    error: BaseException | None = None
    reused: bool = False  # a FINISHED run was returned instead (--reuse): nothing ran


def run_attempts(
    request: RunRequest,
    run_once: Callable[..., SubmittedRun],
    *,
    on_retry: Callable[[str], None] | None = None,
    sleep: Callable[[float], int | None] | None = None,
    **callbacks: Any,
) -> SubmittedRun:
    """Run ``request``'s attempts with ``run_once`` (``launch.run_request``) until one is not
    retried; return (or raise) what the last one did. ``on_retry`` hears what happens between
    attempts; ``callbacks`` go to every attempt. ``sleep`` waits between attempts (default:
    ``wait_for_retry``; a signal number back means stop: the last attempt's end stands)."""
    from reprorun.config import resolve_tracking
    from reprorun.projects.request import load_backend_config
    from reprorun.tracking.store import open_store

    policy = RetryPolicy.of(request)
    if not request.synchronous:
        raise UserInputError(
            "--retries needs reprorun to wait for each attempt to end; it does not go with "
            "--detach (or synchronous=False)."
        )
    say = on_retry or (lambda _text: None)
    first: str | None = None
    attempt_request = replace(request, retries=0)
    attempt = 1
    while True:
        tags = {**request.tags, **attempt_tags(attempt, policy.max_attempts, first)}
        attempt_request = replace(attempt_request, tags=tags)
        outcome = _attempt(attempt_request, run_once, callbacks)
        if outcome.reused and outcome.submitted is not None:
            return outcome.submitted
        first = first or outcome.run_id
        store = open_store(resolve_tracking(request.tracking_uri).uri)
        run = store.get_run(outcome.run_id)
        status, reason = run.info.status, reason_of(run.data.tags)
        if status is RunStatus.FINISHED or not policy.should_retry(attempt, reason):
            return _last(outcome)
        assert reason is not None
        wait = policy.delay(attempt)
        note = ""
        if reason is ExitReason.OUT_OF_MEMORY and policy.memory_factor is not None:
            config, source = load_backend_config(attempt_request.backend_config)
            raised, what = raise_memory(request.backend, config, policy.memory_factor, source)
            docker_args, docker_what = raise_docker_memory(
                attempt_request.docker_args, policy.memory_factor
            )
            if what is not None:
                attempt_request = replace(attempt_request, backend_config=raised)
                note = f"; {what}"
            elif docker_what is not None:
                attempt_request = replace(attempt_request, docker_args=docker_args)
                note = f"; {docker_what}"
            else:
                note = f"; the {request.backend} backend's options have no memory request to raise"
        say(
            f"attempt {attempt} ended {status.value} ({reason.value}); retrying in "
            f"{_seconds(wait)} (attempt {attempt + 1} of {policy.max_attempts}){note}"
        )
        _notify_retry(store, run, request.notify)
        stopped = (sleep or wait_for_retry)(wait)
        if stopped is not None:
            say(f"stopped by signal {stopped} while waiting: attempt {attempt}'s end stands")
            return _last(outcome)
        attempt += 1


def wait_for_retry(seconds: float) -> int | None:
    """Wait ``seconds`` before the next attempt; Ctrl-C, SIGTERM or SIGHUP end the wait
    early (their number is returned: no more attempts)."""
    import threading

    from reprorun._utils import handling_signals

    received: list[int] = []
    woken = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        received.append(signum)
        woken.set()

    with handling_signals(stop):
        woken.wait(seconds)
    return received[0] if received else None


def _last(outcome: _Outcome) -> SubmittedRun:
    """What the last attempt did: its run, or what it raised."""
    if outcome.error is not None:
        raise outcome.error
    assert outcome.submitted is not None
    return outcome.submitted


def _notify_retry(store: TrackingStore, run: Run, given: Iterable[str]) -> None:
    """Tell the run's notification targets that the attempt that just ended is retried."""
    from reprorun.backends.notify import Event, notify, targets_for

    targets = targets_for(store, run.info.experiment_id, given)
    if targets:
        notify(store, Event.RETRY, run, targets)  # never raises


def _attempt(
    request: RunRequest, run_once: Callable[..., SubmittedRun], callbacks: Mapping[str, Any]
) -> _Outcome:
    """Run one attempt: its run id, and what it returned or raised."""
    from reprorun.errors import RunFailed, RunInterrupted, RunNotRecorded
    from reprorun.projects.lifecycle import ReusedRun

    created: list[str] = []
    given_on_create = callbacks.get("on_create")

    def on_create(run_id: str) -> None:
        created.append(run_id)
        if given_on_create:
            given_on_create(run_id)

    try:
        submitted = run_once(request, **{**callbacks, "on_create": on_create})
    except RunFailed as exc:
        return _Outcome(exc.run_id, None, exc)
    except (RunInterrupted, RunNotRecorded, UserInputError):
        raise  # stopped, or the store did not take the end, or bad input: not retried
    except ReprorunError as exc:
        if not created:
            raise  # no run was made: nothing to retry
        return _Outcome(created[0], None, exc)
    return _Outcome(submitted.run_id, submitted, reused=isinstance(submitted, ReusedRun))


def _seconds(value: float) -> str:
    return f"{value:g}s" if value < 60 else f"{value / 60:g}min"


# -- reading attempts back (runs list, runs show)


@dataclass(frozen=True)
class Attempts:
    """One run as the user asked for it: its attempts, oldest first (the last is the
    outcome). A run made without retries is one attempt of one."""

    runs: tuple[Run, ...]

    @property
    def latest(self) -> Run:
        return self.runs[-1]

    @property
    def number(self) -> int:
        """The latest attempt's number (1 for a run made without retries)."""
        return attempt_number(self.latest)

    @property
    def of(self) -> int:
        """How many attempts were allowed (the latest attempt's number if unknown)."""
        try:
            return max(int(self.latest.data.tags.get(MAX_ATTEMPTS_TAG, "")), self.number)
        except ValueError:
            return self.number

    @property
    def retried(self) -> bool:
        return SystemTags.ATTEMPT in self.latest.data.tags

    def to_dict(self) -> dict[str, Any]:
        """The attempt fields of ``runs list --json`` and ``runs show --json``."""
        tags = self.latest.data.tags
        return {
            "attempt": self.number,
            "max_attempts": self.of,
            "attempt_of": tags.get(SystemTags.ATTEMPT_OF),
            "attempts": [
                {
                    "attempt": attempt_number(run),
                    "run_id": run.info.run_id,
                    "status": run.info.status.value,
                    "exit_reason": run.data.tags.get(SystemTags.EXIT_REASON),
                }
                for run in self.runs
            ],
        }


def attempt_number(run: Run) -> int:
    """A run's attempt number (1 for a run made without retries)."""
    try:
        return int(run.data.tags.get(SystemTags.ATTEMPT, "1"))
    except ValueError:
        return 1


def _first_of(run: Run) -> str:
    return run.data.tags.get(SystemTags.ATTEMPT_OF) or run.info.run_id


def group_attempts(runs: Iterable[Run]) -> list[Attempts]:
    """``runs`` (as listed) with the attempts of one run together, in the place of the
    latest one listed; attempts not listed are not looked up."""
    runs_list = list(runs)
    groups: dict[str, list[Run]] = {}
    for run in runs_list:
        groups.setdefault(_first_of(run), []).append(run)
    grouped = {key: tuple(sorted(group, key=attempt_number)) for key, group in groups.items()}
    return [
        Attempts(grouped[key]) for run in runs_list if grouped[key := _first_of(run)][-1] is run
    ]


def attempts_of(store: TrackingStore, run: Run) -> Attempts:
    """Every attempt of the run ``run`` is an attempt of (itself alone without retries)."""
    if SystemTags.ATTEMPT not in run.data.tags:
        return Attempts((run,))
    from reprorun.errors import ResourceNotFound
    from reprorun.tracking.search import TAG, Clause, format_filter

    first_id = _first_of(run)
    found = {run.info.run_id: run}
    try:
        first = store.get_run(first_id)
        found[first_id] = first
    except ResourceNotFound:
        pass  # deleted for good: the others are still shown
    linked = Clause(TAG, SystemTags.ATTEMPT_OF, "=", first_id)
    for other in store.search_runs(
        [run.info.experiment_id], format_filter([linked]), max_results=1000
    ):
        found.setdefault(other.info.run_id, other)
    return Attempts(tuple(sorted(found.values(), key=attempt_number)))
