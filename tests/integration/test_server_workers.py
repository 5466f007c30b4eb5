"""`reprorun server --workers 4` as a real process tree: the same results as one worker.

On PostgreSQL (the deployment for a shared server) 8 concurrent writers lose and duplicate no
metric point, and the requests spread over the workers; reads that close stale runs (a local
run whose supervisor died, a remote run whose heartbeat stopped) close each run once across
workers, with one notification, on PostgreSQL and on SQLite (WAL, writes under BEGIN
IMMEDIATE with a busy timeout: several processes on one file are safe there too). uvicorn's
supervisor restarts a worker that dies, SIGHUP replaces them all, and SIGTERM stops every
worker once the requests in flight are answered; a worker that cannot start stops the server with the reason.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprorun.tracking.entities import SystemTags
from tests.conftest import reprorun_cli
from tests.integration.server_proc import ServerProcess, server_process, started_workers
from tests.integration.test_server import (
    ARTIFACTS,
    call,
    check_load,
    create_run,
    ok,
    write_load,
)
from tests.integration.test_stale_runs_read import _dead_identity

WORKERS = 4
LOAD_SECONDS = 15.0  # shorter than test_server's 30 s: the same checks, at N=4
READERS = 16  # concurrent readers of the stale runs
STALE_RUNS = 12  # of each kind
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@pytest.fixture(params=["postgresql", "sqlite"])
def store_uri(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The server's store: a fresh PostgreSQL schema, or (None) server_process's SQLite file."""
    if request.param == "sqlite":
        yield None
        return
    yield request.getfixturevalue("postgres_url")


# --- load: 8 writers, 4 workers, PostgreSQL --------------------------------------------------


@pytest.mark.slow
def test_concurrent_writers_on_4_workers_and_postgresql_store_every_point_once(
    tmp_path: Path, postgres_url: str
) -> None:
    with server_process(tmp_path / "srv", store_uri=postgres_url, workers=WORKERS) as srv:
        workers = srv.workers()
        assert len(workers) == WORKERS, srv.log()
        busy_before = {pid: cpu_seconds(pid) for pid in workers}
        writers = write_load(srv, LOAD_SECONDS)
        assert sorted(srv.workers()) == sorted(workers), "a worker died under load"
        busy = {pid: cpu_seconds(pid) - busy_before[pid] for pid in workers}
        check_load(srv, writers)
        # The 8 keep-alive connections were spread over the workers, not served by one.
        serving = [pid for pid, seconds in busy.items() if seconds > 0.5]
        assert len(serving) >= 2, busy
        total = sum(len(w.acked) for w in writers)
        print(f"{total} points in {sum(w.requests for w in writers)} requests; CPU s {busy}")


# --- reads that close stale runs: once across workers ---------------------------------------


def _append_script(tmp_path: Path) -> tuple[Path, Path]:
    """A notification command that appends each payload it gets as one line of a file."""
    received = tmp_path / "notified.jsonl"
    script = tmp_path / "append.py"
    script.write_text(
        "import json, os, sys\n"
        "data = json.load(sys.stdin)\n"
        "data['environment'] = sorted(os.environ)\n"
        f"with open({str(received)!r}, 'a') as out:\n"
        "    out.write(json.dumps(data) + '\\n')\n"
    )
    return script, received


def _stale_runs(srv: ServerProcess, experiment_id: str) -> tuple[list[str], list[str]]:
    """Runs a read must close: local ones whose supervisor is dead, remote ones (a Slurm
    job) whose last heartbeat is an hour old."""
    local, remote = [], []
    hour_ago = str(int(time.time() * 1000) - 3_600_000)
    for _ in range(STALE_RUNS):
        run_id = create_run(srv, experiment_id)
        tag = {"run_id": run_id, "key": SystemTags.SUPERVISOR, "value": _dead_identity()}
        ok(call(srv, "POST", "runs/set-tag", tag))
        local.append(run_id)
    for _ in range(STALE_RUNS):
        run_id = create_run(srv, experiment_id)
        tags = [
            {"key": SystemTags.BACKEND, "value": "slurm"},
            {"key": SystemTags.HEARTBEAT, "value": hour_ago},
        ]
        ok(call(srv, "POST", "runs/log-batch", {"run_id": run_id, "tags": tags}))
        remote.append(run_id)
    return local, remote


def _read_all_at_once(srv: ServerProcess, experiment_id: str, run_ids: list[str]) -> list[str]:
    """READERS threads, released together, each searching the experiment and getting every
    run on a connection of its own; returns what went wrong."""
    barrier = threading.Barrier(READERS)
    errors: list[str] = []

    def reader(index: int) -> None:
        conn = srv.connection(timeout=120)
        headers = {"Content-Type": "application/json"}
        try:
            conn.connect()
            barrier.wait(timeout=60)
            requests: list[tuple[str, str, Any]] = [
                ("POST", "runs/search", {"experiment_ids": [experiment_id], "max_results": 100})
            ]
            order = run_ids[index % len(run_ids) :] + run_ids[: index % len(run_ids)]
            requests += [("GET", f"runs/get?run_id={r}", None) for r in order]
            for method, path, body in requests:
                data = None if body is None else json.dumps(body)
                conn.request(method, f"/api/2.0/mlflow/{path}", body=data, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                if response.status != 200:
                    errors.append(f"{method} {path}: {response.status} {answer[:300]!r}")
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
            errors.append(f"reader {index}: {exc!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "readers still running after the bound"
    return errors


@pytest.mark.slow
def test_concurrent_reads_on_4_workers_close_each_stale_run_once(
    tmp_path: Path, store_uri: str | None
) -> None:
    script, received = _append_script(tmp_path)
    # The server's own setting: a command an experiment's tag names never runs on a server.
    setting = {"REPRORUN_NOTIFY": f"cmd:{sys.executable} {script}"}
    with server_process(tmp_path / "srv", store_uri=store_uri, workers=WORKERS, env=setting) as srv:
        workers = srv.workers()
        experiment = ok(call(srv, "POST", "experiments/create", {"name": "stale"}))
        experiment_id = experiment["experiment_id"]
        local, remote = _stale_runs(srv, experiment_id)
        busy_before = {pid: cpu_seconds(pid) for pid in workers}

        assert _read_all_at_once(srv, experiment_id, local + remote) == []

        assert sorted(srv.workers()) == sorted(workers), srv.log()
        busy = {pid: cpu_seconds(pid) - busy_before[pid] for pid in workers}
        assert len([s for s in busy.values() if s > 0.05]) >= 2, busy  # several workers read
        runs = {
            r: ok(call(srv, "GET", "runs/get", query={"run_id": r}))["run"] for r in local + remote
        }
        for run_id, run in runs.items():
            tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
            assert run["info"]["status"] == "FAILED", (run_id, run["info"])
            assert run["info"]["end_time"] > 0
            assert tags[SystemTags.EXIT_REASON] == "node-lost", (run_id, tags)
        # One notification per run (whoever closed it sends it: a lost heartbeat's node-lost,
        # a dead supervisor's failed): none twice, none missing.
        lines = received.read_text().splitlines() if received.exists() else []
        notified = Counter(json.loads(line)["run_id"] for line in lines)
        assert notified == Counter(local + remote), notified
        events = {json.loads(line)["run_id"]: json.loads(line)["event"] for line in lines}
        assert events == {**dict.fromkeys(local, "failed"), **dict.fromkeys(remote, "node-lost")}
        # The workers' configuration (it may hold the auth token) is not passed on.
        assert not [
            line for line in lines if "REPRORUN_SERVER_CONFIG" in json.loads(line)["environment"]
        ]
        # Closed once: reading again changes nothing (end times are those first written).
        again = ok(call(srv, "POST", "runs/search", {"experiment_ids": [experiment_id]}))
        ends = {r["info"]["run_id"]: r["info"]["end_time"] for r in again["runs"]}
        assert ends == {r: run["info"]["end_time"] for r, run in runs.items()}
        assert len(received.read_text().splitlines()) == len(local + remote)


# --- the process tree: a dead worker is replaced; SIGTERM stops them all --------------------


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.1)


@pytest.mark.slow
def test_killed_worker_replaced_sighup_replaces_all_sigterm_stops_all_after_requests(
    tmp_path: Path,
) -> None:
    with server_process(tmp_path / "srv", workers=WORKERS) as srv:
        workers = srv.workers()
        assert len(workers) == WORKERS, srv.log()
        run_id = create_run(srv)

        os.kill(workers[0], signal.SIGKILL)
        _wait(
            lambda: len(set(srv.workers()) - {workers[0]}) == WORKERS,
            30,
            f"uvicorn did not replace the killed worker {workers[0]}",
        )
        replacement = (set(srv.workers()) - set(workers)).pop()
        _wait(
            lambda: replacement in started_workers(srv.log()), 30, "the replacement never started"
        )
        assert f"Child process [{workers[0]}] died" in srv.log()
        for _ in range(2 * WORKERS):  # every worker answers, the new one too
            got = ok(call(srv, "GET", "runs/get", query={"run_id": run_id}))
            assert got["run"]["info"]["run_id"] == run_id

        # SIGHUP replaces every worker, one at a time.
        before = set(srv.workers())
        srv.process.send_signal(signal.SIGHUP)
        _wait(
            lambda: len(set(srv.workers())) == WORKERS and not set(srv.workers()) & before,
            60,
            "SIGHUP did not replace every worker",
        )
        ok(call(srv, "GET", "runs/get", query={"run_id": run_id}))

        # SIGTERM while an upload is half sent: the upload completes, then all stop.
        everyone = [srv.process.pid, *srv.workers()]
        body = os.urandom(2 * 1024 * 1024)
        upload = srv.connection(timeout=60)
        upload.putrequest("PUT", f"{ARTIFACTS}/in-flight/data.bin")
        upload.putheader("Content-Type", "application/octet-stream")
        upload.putheader("Content-Length", str(len(body)))
        upload.endheaders()
        upload.send(body[: len(body) // 2])
        time.sleep(0.5)  # a worker is reading it
        mark = len(srv.log())
        srv.process.send_signal(signal.SIGTERM)
        _wait(lambda: "Received SIGTERM" in srv.log(), 10, "the supervisor did not get SIGTERM")
        _wait(
            lambda: srv.log()[mark:].count("Shutting down") == WORKERS,
            10,
            "the workers did not start shutting down",
        )
        upload.send(body[len(body) // 2 :])
        answer = upload.getresponse()
        assert answer.status == 200, answer.read()
        assert (srv.artifacts / "in-flight" / "data.bin").read_bytes() == body
        upload.close()
        assert srv.process.wait(timeout=30) == 0, srv.log()
        _wait(
            lambda: not [p for p in everyone if _running(p)],
            10,
            "workers still running after the supervisor's SIGTERM",
        )
        assert "Received SIGTERM" in srv.log()


@pytest.mark.slow
def test_a_worker_that_cannot_start_stops_the_server_with_the_reason(tmp_path: Path) -> None:
    """Not a restart loop: the password file is gone when a dead worker is replaced."""
    passwords = tmp_path / "passwords"
    added = reprorun_cli("server-user", "add", str(passwords), "alice", "--password", "a-long-pw!")
    assert added.returncode == 0, added.stderr
    args = ("--basic-auth-file", str(passwords))
    with server_process(tmp_path / "srv", *args, workers=2) as srv:
        victim = srv.workers()[0]
        passwords.unlink()
        os.kill(victim, signal.SIGKILL)
        assert srv.process.wait(timeout=30) == 1, srv.log()
        assert [p for p in srv.workers() if _running(p)] == []
        log = srv.log()
        assert "Cannot read the password file" in log
        assert log.count("cannot start") == 1, log  # tried once, not in a loop
        assert log.rstrip().endswith(
            f"Error: A server worker could not start, so the server stopped: Cannot read the "
            f"password file {passwords}: No such file or directory."
        ), log


def test_a_port_in_use_is_a_clear_error_before_any_worker_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = f"sqlite:///{tmp_path / 'store.db'}"
        args = ("--port", str(port), "--backend-store-uri", db, "--workers", "2")
        busy = reprorun_cli("server", *args, timeout=60)
    assert busy.returncode == 2, busy.stderr
    assert f"Port {port} on 127.0.0.1 is already in use" in busy.stderr
    assert "Traceback" not in busy.stderr


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie waiting for its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
