"""One point of a sweep: ``python -m reprorun.projects.trial REQUEST_FILE RUN_ID_FILE``.

The sweep's driver starts one such process per point, in a session of its own, with the
point's ``RunRequest`` as JSON. It runs the request through the run pipeline
(``launch.run_request``), synchronously, as ``reprorun run`` would: the run's id goes to
RUN_ID_FILE as soon as the run exists (or the reused run's id), what happens is said on stderr,
the command's output goes to stdout, and the exit status is ``reprorun run``'s: 0 FINISHED (or
reused), 1 FAILED or not recorded, 2 bad input, 128+N stopped by signal N, 143 KILLED.
When the request asks for retries, each attempt's run id replaces the last in RUN_ID_FILE and
the status is the last attempt's.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from reprorun.backends.base import SubmittedRun
from reprorun.errors import (
    ReprorunError,
    ResourceNotFound,
    RunFailed,
    RunInterrupted,
    RunNotRecorded,
    UserInputError,
)
from reprorun.projects.fingerprint import Reuse
from reprorun.projects.request import RunRequest


def _say(text: str) -> None:
    print(f"reprorun: {text}", file=sys.stderr, flush=True)


def _progress() -> Callable[[str], None] | None:
    """Plain progress lines when REPRORUN_PROGRESS=plain asks for them (as ``reprorun run``)."""
    from reprorun.config import setting

    if setting("progress") != "plain":
        return None

    def line(text: str) -> None:
        if text:
            _say(text)

    return line


def run_trial(request: RunRequest, run_id_file: Path) -> int:
    """Run ``request`` to its end; the exit status ``reprorun run`` would give."""
    from reprorun.projects.launch import run_request
    from reprorun.projects.lifecycle import ReusedRun
    from reprorun.tracking.entities import RunStatus

    started = time.monotonic()

    def finished(run_id: str, status: str) -> None:
        elapsed = time.monotonic() - started
        _say(f"run {run_id} {status} in {elapsed:.1f}s (reprorun runs show {run_id})")

    def created(run_id: str) -> None:  # each attempt's, when the point is retried
        run_id_file.write_text(run_id + "\n")

    def submitted(run: SubmittedRun) -> None:
        _say(f"run {run.run_id} started")
        created(run.run_id)

    def reusing(found: Reuse) -> None:
        _say(f"reusing {found.explain()}")
        if found.run_id is not None:
            run_id_file.write_text(found.run_id + "\n")

    try:
        run = run_request(
            request,
            on_submit=submitted,
            on_warning=lambda text: _say(f"warning: {text}"),
            progress=_progress(),
            on_reuse=reusing,
            on_create=created,
            on_retry=_say,
        )
    except RunInterrupted as exc:
        finished(exc.run_id, f"KILLED (signal {exc.signum})")
        return 128 + exc.signum
    except RunFailed as exc:
        finished(exc.run_id, "FAILED")
        return 1
    except RunNotRecorded as exc:
        _say(f"run {exc.run_id} {exc.status}, but this end is NOT RECORDED in the store.")
        _say(f"error: {exc}")
        return 1
    except (UserInputError, ResourceNotFound) as exc:
        _say(f"error: {exc}")
        return 2
    except ReprorunError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("interrupted; no run was recorded")
        return 130
    if isinstance(run, ReusedRun):
        _say(f"nothing run (reprorun runs show {run.run_id})")
        return 0
    status = run.get_status()  # the stored one: the code may have ended the run KILLED
    finished(run.run_id, status.value)
    return 128 + signal.SIGTERM if status is RunStatus.KILLED else 0


if __name__ == "__main__":
    request_file, run_id_file = (Path(arg) for arg in sys.argv[1:3])
    sys.exit(run_trial(RunRequest.from_json(request_file.read_text()), run_id_file))
