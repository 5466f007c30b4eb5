"""Every error reprorun raises on purpose.

    ReprorunError
    ├── UserInputError            bad input the user can fix; the CLI exits with code 2
    │   ├── SpecError             a malformed MLproject: carries file and line
    │   ├── ParameterError        one or more bad -P values: carries every problem
    │   ├── EntryPointNotFound    names the entry points that exist
    │   ├── SourceNotFound        a project URI that does not resolve
    │   │   └── GitError          a git command failed: git's words, credentials removed
    │   ├── UnknownNameError      a registry miss (backend, env manager): lists valid names
    │   ├── InvalidTrackingUri    a tracking URI reprorun cannot use
    │   ├── UnsupportedArtifactLocation  an artifact location whose scheme reprorun cannot store to
    │   ├── SearchError           a search filter, order_by or page token that does not parse
    │   ├── SweepSyntaxError      a sweep expression that does not parse or expand: points at where
    │   ├── SweepError            a sweep that cannot do what was asked (unknown id, driven, moved)
    │   └── EnvBuildError         an environment spec that cannot be installed
    ├── TrackingError             the store refused or lost something
    │   ├── ResourceNotFound      unknown run or experiment id
    │   ├── ResourceAlreadyExists an experiment name that is taken
    │   ├── ParamConflict         re-logging a parameter with a different value
    │   ├── StoreVersionError     a store written by a newer reprorun
    │   ├── StoreFileError        a SQLite store that is damaged, not a store, read-only or full
    │   ├── ServerUnavailable     a tracking server that cannot be reached or answered 5xx
    │   ├── ArtifactStorageError  object storage (S3) refused or could not be reached: says why
    │   └── RunNotRecorded        the store refused the end of a run: kept in a journal
    ├── ExecutionError            the run could not be launched or supervised
    │   ├── RunFailed             a synchronous run ended FAILED (as MLflow raises)
    │   └── WorkspaceError        Databricks answered an error: HTTP status and error code
    └── RunInterrupted            Ctrl-C / SIGTERM stopped a run; it is recorded as KILLED

Library code raises these; only the CLI turns them into messages and exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ReprorunError(Exception):
    """Base of every error reprorun raises on purpose."""


class UserInputError(ReprorunError):
    """Input the user can correct; the CLI exits with status 2 and no run is left behind."""


class SpecError(UserInputError):
    """A malformed MLproject file, located by file and (when known) line."""

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(f"{where}{message}")


@dataclass(frozen=True)
class ParamProblem:
    """One bad parameter: which, what was expected, what was given."""

    name: str
    expected: str
    given: str | None  # None: no value given at all

    def describe(self) -> str:
        if self.given is None:
            return f"{self.name}: required ({self.expected}), no value given"
        return f"{self.name}: expected {self.expected}, got {self.given!r}"


class ParameterError(UserInputError):
    """Every bad parameter of one run, reported together."""

    def __init__(self, problems: list[ParamProblem], entry_point: str | None = None):
        self.problems = problems
        self.entry_point = entry_point
        head = "Invalid parameters"
        if entry_point:
            head += f" for entry point {entry_point!r}"
        lines = "\n".join(f"  - {p.describe()}" for p in problems)
        super().__init__(f"{head}:\n{lines}")


class EntryPointNotFound(UserInputError):
    def __init__(self, name: str, available: list[str], where: str | None = None):
        self.name = name
        self.available = available
        listed = ", ".join(available) if available else "none declared"
        at = f" in {where}" if where else ""  # the MLproject file (or folder) looked in
        super().__init__(
            f"Unknown entry point {name!r}{at}. Available entry points: {listed}. "
            "A file ending in .py, .sh or .R can also be given as the entry point."
        )


class SourceNotFound(UserInputError):
    """A project URI that does not name an existing project."""


class GitError(SourceNotFound):
    """A git command failed; the message carries git's own words, credentials removed."""


class UnknownNameError(UserInputError):
    """A name looked up in a registry (backend, env manager) that is not there."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind = kind
        self.name = name
        self.valid = valid
        super().__init__(f"Unknown {kind} {name!r}. Valid choices: {', '.join(valid)}.")


class InvalidTrackingUri(UserInputError):
    """A tracking URI that reprorun cannot use."""


class UnsupportedArtifactLocation(UserInputError):
    """An artifact location (setting, option or experiment's location) whose URI scheme
    reprorun cannot store to; names where it came from, what was given and what works."""


class SearchError(UserInputError):
    """A search filter, order_by clause or page token that does not parse; points at where."""


class SweepSyntaxError(UserInputError):
    """A sweep that does not parse or cannot expand; points at where when there is a where."""

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        text: str | None = None,
        pos: int | None = None,
        hint: str | None = None,
    ):
        self.name, self.text, self.pos = name, text, pos
        line = (
            f"Sweep of parameter {name!r}: {message}" if name is not None else f"Sweep: {message}"
        )
        if text is not None and pos is not None:
            line += f" at position {pos} in '{text}'"
            # The caret sits under the quoted expression that ends the line above.
            line += "\n" + " " * (len(line) - len(text) - 1 + min(pos, len(text))) + "^"
        super().__init__(f"{line}\n{hint}" if hint else line)


class SweepError(UserInputError):
    """A sweep that cannot do what was asked (unknown id, already driven, code moved...)."""


class EnvBuildError(UserInputError):
    """The spec cannot be installed (unknown package, impossible version, bad syntax)."""


class TrackingError(ReprorunError):
    """The tracking store refused an operation."""


class ResourceNotFound(TrackingError):
    """An unknown run or experiment."""


class ResourceAlreadyExists(TrackingError):
    """An experiment name that is already taken."""


class ParamConflict(TrackingError):
    """A parameter logged again with a different value (parameters are immutable)."""

    def __init__(self, run_id: str, key: str, old: str, new: str):
        self.run_id = run_id
        self.key = key
        self.old = old
        self.new = new
        super().__init__(
            f"Parameter {key!r} of run {run_id} is already {old!r}; cannot change it to {new!r}. "
            "Parameters are immutable: log the new value under another key, or start a new run."
        )


class StoreVersionError(TrackingError):
    """A store whose schema is newer than this reprorun understands."""


class StoreFileError(TrackingError):
    """A SQLite store file that cannot be used: damaged, not a store, unreadable, read-only,
    or on a failing or full disk. Names the file, the cause and what to do."""

    def __init__(self, path: str, problem: str, advice: str, *, replaceable: bool = False):
        self.path = path
        self.problem = problem
        self.advice = advice
        self.replaceable = replaceable  # damaged or not a store: a new store may replace it
        super().__init__(f"Tracking store {path}: {problem}\n{advice}")


class ServerUnavailable(TrackingError):
    """A tracking server that could not be reached, or failed with a 5xx answer."""


class ArtifactStorageError(TrackingError):
    """Object storage (S3 or an S3-compatible server) refused an artifact operation or could
    not be reached: a missing bucket, rejected or missing credentials, a network error. The
    message names the bucket, the endpoint and what to check; nothing half-written is left."""


class RunNotRecorded(TrackingError):
    """The store refused to record how a run's command ended, even after retries (a full
    disk, a read-only or broken file). The true end is kept in a journal (``journal``, None
    when even that could not be written) that the next reader of the run records."""

    def __init__(
        self,
        run_id: str,
        status: str,
        exit_code: int | None,
        store: str,
        cause: str,
        journal: Path | None,
    ):
        self.run_id = run_id
        self.status = status
        self.exit_code = exit_code
        self.store = store
        self.cause = cause
        self.journal = journal
        code = f", exit code {exit_code}" if exit_code is not None else ""
        head = (
            f"The store {store} did not record the end of run {run_id} ({status}{code}): "
            f"{cause.rstrip('.')}."
        )
        if journal is not None:
            tail = (
                f" That end is kept in {journal}. Once the store accepts writes again (free "
                f"disk space, make the file and its folder writable), reprorun runs status "
                f"{run_id} records it."
            )
        else:
            tail = (
                " It could not be kept in a journal either. Once the store accepts writes "
                f"again, record it with: reprorun runs end {run_id} --status {status}"
            )
        super().__init__(head + tail)


class ExecutionError(ReprorunError):
    """The run could not be launched or supervised."""


class RunFailed(ExecutionError):
    """A synchronous run whose command exited non-zero."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        super().__init__(f"Run {run_id} failed (reprorun runs show {run_id} has its log).")


class WorkspaceError(ExecutionError):
    """The workspace answered a call with an error (HTTP status and Databricks' error code)."""

    def __init__(self, message: str, status: int, error_code: str):
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class RunInterrupted(ReprorunError):
    """The user stopped a synchronous run with a signal; the run is recorded as KILLED."""

    def __init__(self, signum: int, run_id: str):
        self.signum = signum
        self.run_id = run_id
        super().__init__(f"Run {run_id} was stopped by signal {signum} and marked KILLED.")


__all__ = [
    "ArtifactStorageError",
    "EntryPointNotFound",
    "EnvBuildError",
    "ExecutionError",
    "GitError",
    "InvalidTrackingUri",
    "ParamConflict",
    "ParamProblem",
    "ParameterError",
    "ReprorunError",
    "ResourceAlreadyExists",
    "ResourceNotFound",
    "RunFailed",
    "RunInterrupted",
    "RunNotRecorded",
    "SearchError",
    "ServerUnavailable",
    "SourceNotFound",
    "SpecError",
    "StoreFileError",
    "StoreVersionError",
    "SweepError",
    "SweepSyntaxError",
    "TrackingError",
    "UnknownNameError",
    "UnsupportedArtifactLocation",
    "UserInputError",
    "WorkspaceError",
]
