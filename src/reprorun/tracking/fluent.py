"""The API for code running inside a run: ``import reprorun; reprorun.log_metric(...)``.

Under ``reprorun run`` the process attaches to the run the runner created (found through
``REPRORUN_RUN_ID``); the runner ends that run when its command exits, but a FAILED or KILLED
the code gives it (``end_run(status="FAILED")``, a ``with`` block that raises) is recorded at
once and stands, whatever the exit code (``backends.base.ends_over``). Run by hand, the first
call creates a run in the default experiment, and it ends FINISHED at exit (FAILED when the
``with`` block raises).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from reprorun.errors import UserInputError
from reprorun.tracking.entities import Metric, Run, RunStatus, now_ms
from reprorun.tracking.store.base import TrackingStore

T = TypeVar("T")


class ActiveRun:
    """The run this process logs to; a context manager that ends the run it created."""

    def __init__(self, run_id: str, store: TrackingStore, *, owned: bool):
        self.run_id = run_id
        self.store = store
        self.owned = owned  # created here (not by the runner): we set its final status

    @property
    def info(self) -> Any:
        return self.store.get_run(self.run_id).info

    def get_run(self) -> Run:
        return self.store.get_run(self.run_id)

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            end_run(RunStatus.FINISHED)
        elif issubclass(exc_type, KeyboardInterrupt):
            end_run(RunStatus.KILLED)
        else:
            end_run(RunStatus.FAILED)

    def __repr__(self) -> str:
        return f"<ActiveRun {self.run_id}{' (owned)' if self.owned else ''}>"


_active: ActiveRun | None = None
_lock = threading.RLock()
_atexit_registered = False


def start_run(
    run_id: str | None = None,
    *,
    experiment_name: str | None = None,
    run_name: str | None = None,
    tracking_uri: str | None = None,
) -> ActiveRun:
    """Attach to the runner's run (``REPRORUN_RUN_ID``), to ``run_id``, or create a new run."""
    global _active, _atexit_registered
    from reprorun.config import experiment_name as default_experiment_name
    from reprorun.tracking import run_context
    from reprorun.tracking.store import open_store

    with _lock:
        if _active is not None:
            return _active
        store = open_store(tracking_uri or run_context.tracking_uri())
        attach_id = run_id or run_context.run_id()
        if attach_id:
            store.get_run(attach_id)  # fails clearly if the id is unknown
            _active = ActiveRun(attach_id, store, owned=False)
            return _active
        name = experiment_name or default_experiment_name()
        if name:
            exp_id = store.get_or_create_experiment(name)
        else:
            exp_id = run_context.experiment_id() or "0"
        from reprorun._utils import current_user

        created = store.create_run(
            exp_id,
            run_name=run_name,
            user_id=current_user(),
            tags={"mlflow.source.type": "LOCAL", "mlflow.source.name": _script_name()},
        )
        _active = ActiveRun(created.info.run_id, store, owned=True)
        if not _atexit_registered:
            atexit.register(_end_at_exit)
            global _previous_excepthook
            _previous_excepthook = sys.excepthook
            sys.excepthook = _record_uncaught
            _atexit_registered = True
        return _active


NOT_IN_A_RUN = (
    "Not inside a run: REPRORUN_RUN_ID is not set. Start the program with `reprorun run "
    "<project>` (it sets REPRORUN_RUN_ID for the command), or name a run with --run-id: "
    "`export REPRORUN_RUN_ID=$(reprorun runs create)` makes one, `reprorun runs end` ends it."
)


def attach(run_id: str | None = None, tracking_uri: str | None = None) -> ActiveRun:
    """The run a program outside Python logs to (``reprorun log``): ``run_id``, else the
    runner's (``REPRORUN_RUN_ID``); never a new one, so nothing is logged to a stray run."""
    from reprorun.tracking import run_context

    run_id = run_id or run_context.run_id()
    if not run_id:
        raise UserInputError(NOT_IN_A_RUN)
    return start_run(run_id, tracking_uri=tracking_uri)


def _script_name() -> str:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return str(Path(path).resolve()) if path else "<interactive>"


_uncaught: list[type[BaseException]] = []


def _record_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    _uncaught.append(exc_type)
    _previous_excepthook(exc_type, exc, tb)


_previous_excepthook = sys.excepthook


# Python tells atexit hooks nothing about sys.exit(n); `with reprorun.start_run():` sees it.
def _end_at_exit() -> None:
    global _active
    with _lock:
        if _active is not None and not _active.owned:
            # The runner's run: a process that ends (or crashes) is one step of the command,
            # whose exit code decides; only end_run and a `with` block give the code's verdict.
            _active = None
            return
    if _uncaught:
        interrupted = issubclass(_uncaught[0], KeyboardInterrupt)
        end_run(RunStatus.KILLED if interrupted else RunStatus.FAILED)
    else:
        end_run(RunStatus.FINISHED)


def end_run(status: RunStatus | str = RunStatus.FINISHED) -> None:
    """Detach from the active run. A run created here gets ``status``; the runner's run gets
    it if it is FAILED or KILLED (the code's verdict, which the exit code does not undo),
    while FINISHED is left to the runner: the command goes on, and may still fail."""
    global _active
    final = next((s for s in RunStatus if s.is_terminal and s.value == status), None)
    if final is None:
        raise UserInputError(f"end_run: status must be FINISHED, FAILED or KILLED, got {status!r}.")
    with _lock:
        active, _active = _active, None
    if active is not None and (active.owned or final is not RunStatus.FINISHED):
        active.store.update_run(
            active.run_id, status=final, end_time=now_ms(), only_if_status=RunStatus.RUNNING
        )


def active_run() -> ActiveRun | None:
    return _active


def _run() -> ActiveRun:
    return _active or start_run()


# --- params ---------------------------------------------------------------------------------


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def log_param(key: str, value: Any) -> Any:
    """Log a parameter. Logging the same value again is fine; a different value is an error."""
    run = _run()
    run.store.log_batch(run.run_id, params={key: _to_text(value)})
    return value


def log_params(params: Mapping[str, Any]) -> None:
    run = _run()
    run.store.log_batch(run.run_id, params={k: _to_text(v) for k, v in params.items()})


def param(name: str, default: T, type: Any = None) -> T:
    """The value of parameter ``name``, cast to the default's type, logged on the run.

    The value comes from the run (``reprorun run -P name=value``), else from this program's
    own command line (``-P name=value``, ``--name value`` or ``--name=value``), else the
    default. The seed workshop's ``mlflow_param('cp', 0.05)``.
    """
    run = _run()
    caster = type or (default.__class__ if default is not None else str)
    logged = run.store.get_run(run.run_id).data.params.get(name)
    if logged is not None:
        # Already on the run (the runner logged the -P value): cast it, don't log it again,
        # so "5" given to a float default is 5.0 here without clashing with the logged "5".
        return _cast(name, logged, caster)  # type: ignore[no-any-return]
    raw = _from_argv(name, sys.argv[1:])
    value: Any = default if raw is None else _cast(name, raw, caster)
    log_param(name, value)
    return value  # type: ignore[no-any-return]


def _from_argv(name: str, argv: list[str]) -> str | None:
    found: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-P" and i + 1 < len(argv):
            key, _, value = argv[i + 1].partition("=")
            if key == name:
                found = value
            i += 2
            continue
        if arg.startswith("-P") and "=" in arg[2:]:
            key, _, value = arg[2:].partition("=")
            if key == name:
                found = value
        elif arg == f"--{name}" and i + 1 < len(argv):
            found = argv[i + 1]
            i += 2
            continue
        elif arg.startswith((f"--{name}=", f"{name}=")):  # bare: `-P cp=0.02 maxdepth=5`
            found = arg.split("=", 1)[1]
        i += 1
    return found


def _cast(name: str, raw: str, caster: Any) -> Any:
    from reprorun.params import CastError, ParamType, cast_value

    if caster is bool:
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise UserInputError(f"Parameter {name!r}: expected a boolean (true/false), got {raw!r}.")
    ptype = {int: ParamType.INT, float: ParamType.FLOAT}.get(caster)
    if ptype is not None:
        try:
            return cast_value(ptype, raw, base_dir=Path.cwd())
        except CastError as exc:
            raise UserInputError(
                f"Parameter {name!r}: expected {exc.expected}, got {raw!r}."
            ) from None
    try:
        return caster(raw)
    except (TypeError, ValueError) as exc:
        raise UserInputError(
            f"Parameter {name!r}: cannot convert {raw!r} "
            f"to {getattr(caster, '__name__', caster)}: {exc}"
        ) from None


# --- metrics and tags -----------------------------------------------------------------------


def _metric(key: str, value: Any, step: int | None, timestamp: int | None) -> Metric:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"Metric {key!r} must be a number, got {value!r}.") from None
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise UserInputError(f"Metric {key!r}: step must be an integer, got {step!r}.")
    return Metric(key, number, timestamp if timestamp is not None else now_ms(), step or 0)


def log_metric(
    key: str, value: float, step: int | None = None, timestamp: int | None = None
) -> None:
    run = _run()
    run.store.log_batch(run.run_id, metrics=[_metric(key, value, step, timestamp)])


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    run = _run()
    stamp = now_ms()
    run.store.log_batch(
        run.run_id, metrics=[_metric(k, v, step, stamp) for k, v in metrics.items()]
    )


def set_tag(key: str, value: Any) -> None:
    run = _run()
    run.store.log_batch(run.run_id, tags={key: _to_text(value)})


def set_tags(tags: Mapping[str, Any]) -> None:
    run = _run()
    run.store.log_batch(run.run_id, tags={k: _to_text(v) for k, v in tags.items()})


# --- artifacts ------------------------------------------------------------------------------


def get_artifact_uri(artifact_path: str | None = None) -> str:
    run = _run()
    uri = run.store.get_run(run.run_id).info.artifact_uri
    if not artifact_path:
        return uri
    from reprorun.tracking.artifacts import safe_relative

    return f"{uri.rstrip('/')}/{safe_relative(artifact_path.strip('/')).as_posix()}"


def log_artifact(local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    from reprorun.tracking import artifacts

    artifacts.log_file(get_artifact_uri(), Path(local_path), artifact_path, tracking_uri=_uri())


def log_artifacts(local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    from reprorun.tracking import artifacts

    artifacts.log_dir(get_artifact_uri(), Path(local_dir), artifact_path, tracking_uri=_uri())


def log_text(text: str, artifact_file: str) -> None:
    from reprorun.tracking import artifacts

    rel = artifacts.safe_relative(artifact_file)
    uri = get_artifact_uri()
    if artifacts.is_remote(uri):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / rel.name
            local.write_text(text, encoding="utf-8")
            parent = str(rel.parent) if str(rel.parent) != "." else None
            artifacts.log_file(uri, local, parent, tracking_uri=_uri())
        return
    artifacts.write_text(uri, artifact_file, text)


def _uri() -> str | None:
    """The active run's tracking server, for artifact locations relative to it."""
    return getattr(_run().store, "uri", None)
