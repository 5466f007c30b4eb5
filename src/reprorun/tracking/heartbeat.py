"""A remote job's wrapper: ``python -m reprorun.tracking.heartbeat --every S -- COMMAND...``.

Ray, Slurm, Kubernetes and Databricks run the project's command under this wrapper. It runs
the command, copies its output (stdout and stderr as one stream) to its own stdout, so the
engine's log is what it was, and every ``S`` seconds, while the command runs:

- sets the run's ``reprorun.heartbeat`` tag (ms since the epoch): a run whose heartbeat stops
  is closed FAILED with reason ``node-lost`` (``backends.heartbeat``);
- stores the output so far as the run's log artifact (``logs/run.log``), so the UI and
  ``reprorun runs logs`` show it while the job runs instead of only at its end. The whole log
  is uploaded each time (artifact stores cannot append), so a long log is uploaded less often:
  at most about ``_UPLOAD_BYTES_PER_BEAT`` per heartbeat on average, whatever its size.

Once the command has ended it stores the whole log, then sets ``reprorun.commandExit`` (the
command's exit status): a reader that finds a run whose wrapper said so and whose engine has
not been asked since closes it from that report (``backends.heartbeat``), so a detached job
ends (and is notified) even if nobody asks its engine.

With ``--system-metrics S`` (the run's system-metrics switch on: the backends pass
REPRORUN_SYSTEM_METRICS_INTERVAL; absent or 0, off) it also logs, every ``S`` seconds, the
``system/*`` metrics of the node and of the command's process tree, as a local run does
(``reprorun.tracking.system_sampler``, one batch per interval), and the tree's peak memory
(``SystemTags.PEAK_MEMORY``) once the command has ended.

The output is kept in a spool file, never in memory; each upload sends a copy of the spool's
complete part (the file streamed, at most one chunk in memory). The last upload happens once the
command has ended, and the job's backend keeps the engine's log as before when it closes the
run, so nothing is lost if the wrapper dies first.

A job that cannot reach the run's store (a SQLite file on the submitting machine, with no file
system shared with the node) gets none of these: the command runs and its log arrives at the end, as
before. Failures to report are said once on stderr and never fail the job. Standard library
only, like the rest of the in-run client.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from reprorun.tracking.entities import RunStatus, SystemTags, now_ms

if TYPE_CHECKING:
    from reprorun.tracking.system_sampler import SystemMetrics

LOG_ARTIFACT = "logs/run.log"  # the run's log, as every backend keeps it
_CHUNK = 1 << 16
_LAST_BEAT_SECONDS = 60.0
_UPLOAD_BYTES_PER_BEAT = 1 << 20  # a log of N MB is uploaded every N heartbeats at most
_DRAIN_SECONDS = 5.0


class Reporter:
    """Heartbeats and log uploads for one run, through the run's store."""

    def __init__(self, store: Any, run_id: str, artifact_uri: str, tracking_uri: str):
        self.store = store
        self.run_id = run_id
        self.artifact_uri = artifact_uri
        self.tracking_uri = tracking_uri
        self.uploaded = -1  # bytes of the spool stored so far
        self.started = False  # the run has been said RUNNING
        self.beats_to_skip = 0  # heartbeats left before the (long) log is uploaded again
        self._complained = False

    def beat(self, spool: Path, size: int, *, last: bool = False) -> None:
        """One heartbeat, and the spool's first ``size`` bytes as the run's log if it grew
        (a long log not at every beat: see the module's docstring; ``last``: always)."""
        try:
            self.store.set_tag(self.run_id, SystemTags.HEARTBEAT, str(now_ms()))
            if not self.started:
                # The job runs: its run too, even if nobody has asked the engine yet.
                self.store.update_run(
                    self.run_id, status=RunStatus.RUNNING, only_if_status=RunStatus.SCHEDULED
                )
                self.started = True
            if size != self.uploaded and (last or self.beats_to_skip <= 0):
                self._upload(spool, size)
                self.uploaded = size
                self.beats_to_skip = size // _UPLOAD_BYTES_PER_BEAT
            else:
                self.beats_to_skip -= 1
        except Exception as exc:  # a store that went away: the job goes on regardless
            if not self._complained:
                self._complained = True
                print(f"[reprorun] heartbeat or live log not sent: {exc}", file=sys.stderr)

    def ended(self, status: int) -> None:
        """Say that the command ended with exit ``status`` (its log is stored by then)."""
        try:
            self.store.set_tag(self.run_id, SystemTags.COMMAND_EXIT, str(status))
        except Exception as exc:  # the engine still says how the job ended
            print(f"[reprorun] the command's end not stored: {exc}", file=sys.stderr, flush=True)

    def peak(self, sampler: SystemMetrics) -> None:
        """Stop ``sampler`` and store the tree's peak memory it saw (if any) on the run."""
        try:
            tags = sampler.stop()
            if tags:
                self.store.log_batch(self.run_id, tags=tags)
        except Exception as exc:  # the job's end is not the tag's problem
            print(f"[reprorun] peak memory not stored: {exc}", file=sys.stderr, flush=True)

    def _upload(self, spool: Path, size: int) -> None:
        from reprorun.tracking.artifacts import log_file

        with tempfile.TemporaryDirectory(prefix="reprorun-log-") as tmp:
            snapshot = Path(tmp) / Path(LOG_ARTIFACT).name
            with spool.open("rb") as src, snapshot.open("wb") as dst:
                copy_prefix(src, dst, size)  # a fixed size: the spool grows meanwhile
            log_file(
                self.artifact_uri,
                snapshot,
                str(Path(LOG_ARTIFACT).parent),
                tracking_uri=self.tracking_uri,
            )


def _start_sampler(reporter: Reporter, pid: int, interval: float) -> SystemMetrics | None:
    """The system metrics of the command ``pid``, sampled from now on (None, said on stderr,
    if the sampler cannot start: the job goes on regardless)."""
    try:
        from reprorun.tracking.system_sampler import SystemMetrics

        sampler = SystemMetrics(reporter.store, reporter.run_id, pid, interval, Path.cwd())
        sampler.start()
    except Exception as exc:
        print(f"[reprorun] system metrics not sampled: {exc}", file=sys.stderr, flush=True)
        return None
    return sampler


def copy_prefix(src: IO[bytes], dst: IO[bytes], size: int) -> None:
    """Copy the first ``size`` bytes of ``src`` to ``dst``, one chunk at a time."""
    left = size
    while left > 0:
        chunk = src.read(min(_CHUNK, left))
        if not chunk:
            break
        dst.write(chunk)
        left -= len(chunk)


def reporter_for_run() -> Reporter | None:
    """The reporter of the run this job is (from the run's variables), or None with a line
    on stderr saying why when its store cannot be reached from here."""
    from reprorun.config import resolve_tracking
    from reprorun.tracking import run_context

    run_id, uri = run_context.run_id(), run_context.tracking_uri()
    if not run_id or not uri:
        return None
    try:
        target = resolve_tracking(uri)
        if target.sqlite_path is not None and not Path(target.sqlite_path).is_file():
            # Another machine's file: opening it here would make a new, empty store.
            _say(f"the run's store {target.sqlite_path} is not on this node")
            return None
        from reprorun.tracking.artifacts import is_remote, local_dir
        from reprorun.tracking.store import open_store

        store = open_store(uri)
        artifact_uri = store.get_run(run_id).info.artifact_uri
        folder = None if is_remote(artifact_uri) else local_dir(artifact_uri)
        if target.sqlite_path is None and folder is not None and not folder.parent.is_dir():
            # A database server, and artifacts in a folder of the submitting machine.
            _say(f"the run's artifact folder {folder} is not on this node")
            return None
    except Exception as exc:
        _say(f"the run's store {uri} cannot be reached from here ({exc})")
        return None
    return Reporter(store, run_id, artifact_uri, uri)


def _say(why: str) -> None:
    print(
        f"[reprorun] {why}: no heartbeats or live log; the log is kept when the job ends.",
        file=sys.stderr,
        flush=True,
    )


def run(
    command: Sequence[str],
    every: float,
    out: IO[bytes] | None = None,
    metrics_every: float | None = None,
) -> int:
    """Run ``command`` with heartbeats every ``every`` seconds, and its system metrics every
    ``metrics_every`` seconds when given; returns its exit status as a shell gives it (128 +
    the signal that ended it). The command starts at once: the run's store is opened beside
    it, by the heartbeat thread."""
    out = out if out is not None else sys.stdout.buffer
    proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pipe = proc.stdout
    assert isinstance(pipe, io.BufferedReader)

    def forward(signum: int, _frame: Any) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    with tempfile.TemporaryDirectory(prefix="reprorun-job-") as tmp:
        spool_path = Path(tmp) / "spool.log"
        state = _Spool()
        done = threading.Event()
        found: list[Reporter] = []
        samplers: list[SystemMetrics] = []

        def heartbeats() -> None:
            reporter = reporter_for_run()
            if reporter is None:
                state.wanted = False  # nobody to send it to: stop keeping a copy
                return
            found.append(reporter)
            if metrics_every and not done.is_set():
                sampler = _start_sampler(reporter, proc.pid, metrics_every)
                if sampler is not None:
                    samplers.append(sampler)
            while not done.is_set():
                reporter.beat(spool_path, state.size)
                done.wait(every)

        beats = threading.Thread(target=heartbeats, name="reprorun-heartbeat", daemon=True)
        beats.start()
        copying = threading.Thread(
            target=_copy_output, args=(pipe, out, spool_path, state), name="reprorun-output"
        )
        copying.daemon = True  # a grandchild may hold the output open after the command ends
        copying.start()
        code = proc.wait()
        copying.join(_DRAIN_SECONDS)  # what the command wrote last
        done.set()
        beats.join(_LAST_BEAT_SECONDS)  # a store that hangs does not hold the job's end long
        status = 128 - code if code < 0 else code
        if found and not beats.is_alive():
            # the whole log, once the command has ended
            found[0].beat(spool_path, state.size, last=True)
            if samplers:
                found[0].peak(samplers[0])
            found[0].ended(status)
    return status


def _copy_output(pipe: io.BufferedReader, out: IO[bytes], spool_path: Path, state: _Spool) -> None:
    """The command's output to ``out``, and to the spool while it is wanted."""
    with spool_path.open("ab") as spool:
        for chunk in iter(lambda: pipe.read1(_CHUNK), b""):
            out.write(chunk)
            out.flush()
            if state.wanted:
                spool.write(chunk)
                spool.flush()
                state.size += len(chunk)


class _Spool:
    """What the output loop and the heartbeat thread share."""

    def __init__(self) -> None:
        self.wanted = True  # keep a copy of the output (until the store proves unreachable)
        self.size = 0  # bytes written to the spool, flushed


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if "--" not in args or args.index("--") == len(args) - 1:
        print(
            "usage: python -m reprorun.tracking.heartbeat [--every S] [--system-metrics S]"
            " -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    split = args.index("--")
    options, command = args[:split], args[split + 1 :]
    every = 15.0
    metrics_every: float | None = None
    pairs = dict(zip(options[::2], options[1::2], strict=False))
    if "--every" in pairs:
        every = max(float(pairs["--every"]), 0.05)
    if float(pairs.get("--system-metrics", "0")) > 0:
        metrics_every = max(float(pairs["--system-metrics"]), 0.05)
    return run(command, every, metrics_every=metrics_every)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
