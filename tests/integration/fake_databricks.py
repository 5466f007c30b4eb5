"""A fake Databricks workspace on 127.0.0.1, for the databricks backend's tests.

No workspace is reachable from here, so this small threaded HTTP server follows the documented
request and response shapes of the endpoints the backend uses:

    GET  /api/2.0/dbfs/get-status?path=      POST /api/2.0/dbfs/put {path, contents, overwrite}
    POST /api/2.0/dbfs/create {path, overwrite} -> {handle}
    POST /api/2.0/dbfs/add-block {handle, data}   POST /api/2.0/dbfs/close {handle}
    POST /api/2.1/jobs/runs/submit {run_name, tasks: [...], idempotency_token?} -> {run_id}
    GET  /api/2.1/jobs/runs/get?run_id=       GET /api/2.1/jobs/runs/get-output?run_id=<task run>
    POST /api/2.1/jobs/runs/cancel {run_id}

It checks the bearer token (401 without one, 403 for a wrong one, as Databricks answers),
refuses DBFS writes over 1 MB (MAX_BLOCK_SIZE_EXCEEDED) and malformed submissions (400
INVALID_PARAMETER_VALUE), keeps DBFS files in memory, and answers errors as
``{"error_code", "message"}``. A test drives a run's state (``set_state``, ``set_output``),
or with ``execute=True`` the fake runs the submitted spark_python_task itself: it writes its
DBFS files to a folder standing for the /dbfs mount and runs the launcher with a Python that
has no reprorun (a venv of this Python, as a cluster's driver has its own), following the
process for the run's state and output.

    with FakeWorkspace() as ws:
        ws.url, ws.token, ws.submitted[0], ws.dbfs["/path"], ws.set_state(run_id, "RUNNING")
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

MAX_BLOCK = 1 << 20  # DBFS: put contents and add-block data are limited to 1 MB
TASK_TYPES = ("spark_python_task", "notebook_task", "spark_jar_task", "python_wheel_task")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class FakeRun:
    run_id: int
    task_run_id: int
    job_id: int
    body: dict[str, Any]
    state: dict[str, Any] = field(default_factory=lambda: {"life_cycle_state": "PENDING"})
    termination: dict[str, Any] | None = None  # status.termination_details (Jobs API 2.1)
    output: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    cancelled: bool = False


@dataclass
class Failure:
    path: str
    status: int
    code: str
    message: str
    times: int
    headers: dict[str, str]


class FakeWorkspace:
    """The fake workspace; a context manager that serves until the block ends."""

    def __init__(self, token: str = "dapi-fake-token", *, execute: bool = False):
        self.token = token
        self.execute = execute
        self.dbfs: dict[str, bytes] = {}
        self.runs: dict[int, FakeRun] = {}
        self.submitted: list[dict[str, Any]] = []  # runs/submit bodies, in order
        self.requests: list[tuple[str, str]] = []  # (method, path) of every authorized call
        self.tokens_seen: list[str] = []
        self._handles: dict[int, tuple[str, bytearray]] = {}
        self._failures: list[Failure] = []
        self._next = 1000
        self._lock = threading.Lock()
        self._mount = Path(tempfile.mkdtemp(prefix="fake-dbfs-"))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeWorkspace:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for run in list(self.runs.values()):
            if run.process is not None and run.process.poll() is None:
                os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait(timeout=10)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        import shutil

        shutil.rmtree(self._mount, ignore_errors=True)
        shutil.rmtree(f"{self._mount}-python", ignore_errors=True)

    # --- what a test drives and reads ---------------------------------------------------------

    def set_state(
        self,
        run_id: int | str,
        life_cycle_state: str,
        result_state: str | None = None,
        message: str = "",
        termination: dict[str, Any] | None = None,
    ) -> None:
        """The run's state; ``termination``: the code, type and message of an ended run's
        ``status.termination_details``."""
        state: dict[str, Any] = {"life_cycle_state": life_cycle_state, "state_message": message}
        if result_state:
            state["result_state"] = result_state
        self.runs[int(run_id)].state = state
        self.runs[int(run_id)].termination = termination

    def set_output(self, run_id: int | str, logs: str = "", **more: Any) -> None:
        """The task's output as runs/get-output returns it (logs, error, error_trace, ...)."""
        self.runs[int(run_id)].output = {"logs": logs, **more}

    def forget(self, run_id: int | str) -> None:
        """Databricks deletes runs after 60 days."""
        del self.runs[int(run_id)]

    def fail_next(
        self,
        path: str,
        status: int,
        code: str = "TEMPORARILY_UNAVAILABLE",
        message: str = "try again",
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._failures.append(Failure(path, status, code, message, times, headers or {}))

    def calls(self, path: str) -> int:
        return sum(1 for _, p in self.requests if p == path)

    def archive(self, dbfs_path: str) -> dict[str, bytes | None]:
        """A tarball stored in DBFS: member name -> content (None for folders and links)."""
        members: dict[str, bytes | None] = {}
        with tarfile.open(fileobj=io.BytesIO(self.dbfs[dbfs_path]), mode="r:gz") as tar:
            for member in tar.getmembers():
                got = tar.extractfile(member) if member.isreg() else None
                members[member.name] = got.read() if got else None
        return members

    def wait_for(self, run_id: int | str, life_cycle_state: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.runs[int(run_id)].state.get("life_cycle_state") != life_cycle_state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is {self.runs[int(run_id)].state}")
            time.sleep(0.05)

    # --- the API --------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        for failure in self._failures:
            if failure.path == path and failure.times > 0:
                failure.times -= 1
                raise ApiError(failure.status, failure.code, failure.message, failure.headers)
        routes = {
            ("GET", "/api/2.0/dbfs/get-status"): self._get_status,
            ("POST", "/api/2.0/dbfs/put"): self._put,
            ("POST", "/api/2.0/dbfs/create"): self._create,
            ("POST", "/api/2.0/dbfs/add-block"): self._add_block,
            ("POST", "/api/2.0/dbfs/close"): self._close,
            ("POST", "/api/2.1/jobs/runs/submit"): self._submit,
            ("GET", "/api/2.1/jobs/runs/get"): self._runs_get,
            ("GET", "/api/2.1/jobs/runs/get-output"): self._get_output,
            ("POST", "/api/2.1/jobs/runs/cancel"): self._cancel,
        }
        route = routes.get((method, path))
        if route is None:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")
        with self._lock:
            return route(query if method == "GET" else body)

    def _get_status(self, query: dict[str, str]) -> Any:
        path = _dbfs_path(query.get("path"))
        if path not in self.dbfs:
            raise ApiError(
                404, "RESOURCE_DOES_NOT_EXIST", f"No file or directory exists on path {path}."
            )
        return {
            "path": path,
            "is_dir": False,
            "file_size": len(self.dbfs[path]),
            "modification_time": 0,
        }

    def _put(self, body: dict[str, Any]) -> Any:
        path = _dbfs_path(body.get("path"))
        data = _block(body.get("contents"))
        if path in self.dbfs and not body.get("overwrite"):
            raise ApiError(
                400,
                "RESOURCE_ALREADY_EXISTS",
                f"A file or directory already exists at the input path {path}.",
            )
        self.dbfs[path] = data
        return {}

    def _create(self, body: dict[str, Any]) -> Any:
        path = _dbfs_path(body.get("path"))
        if path in self.dbfs and not body.get("overwrite"):
            raise ApiError(
                400,
                "RESOURCE_ALREADY_EXISTS",
                f"A file or directory already exists at the input path {path}.",
            )
        self._next += 1
        self._handles[self._next] = (path, bytearray())
        return {"handle": self._next}

    def _add_block(self, body: dict[str, Any]) -> Any:
        handle = body.get("handle")
        if handle not in self._handles:
            raise ApiError(400, "RESOURCE_DOES_NOT_EXIST", f"Handle {handle} does not exist.")
        self._handles[handle][1].extend(_block(body.get("data")))
        return {}

    def _close(self, body: dict[str, Any]) -> Any:
        handle = body.get("handle")
        if handle not in self._handles:
            raise ApiError(400, "RESOURCE_DOES_NOT_EXIST", f"Handle {handle} does not exist.")
        path, data = self._handles.pop(handle)
        self.dbfs[path] = bytes(data)
        return {}

    def _submit(self, body: dict[str, Any]) -> Any:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "A run must have at least one task.")
        for task in tasks:
            if not task.get("task_key"):
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "Each task needs a task_key.")
            cluster = task.get("new_cluster")
            if not isinstance(cluster, dict) or not cluster.get("spark_version"):
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE", "Missing required field: spark_version"
                )
            kinds = [kind for kind in TASK_TYPES if kind in task]
            if len(kinds) != 1:
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE", "A task needs exactly one task type."
                )
            python = task.get("spark_python_task")
            if python is not None:
                file = str(python.get("python_file", ""))
                if not file.startswith("dbfs:/") or _dbfs_path(file[5:]) not in self.dbfs:
                    raise ApiError(
                        400, "INVALID_PARAMETER_VALUE", f"Python file {file} does not exist."
                    )
                if not all(isinstance(p, str) for p in python.get("parameters", [])):
                    raise ApiError(400, "INVALID_PARAMETER_VALUE", "parameters must be strings")
        token = body.get("idempotency_token")
        for run in self.runs.values():
            if token and run.body.get("idempotency_token") == token:
                return {"run_id": run.run_id}
        self.submitted.append(body)
        self._next += 1
        run = FakeRun(self._next, self._next + 1, 900000 + self._next, body)
        self._next += 1
        self.runs[run.run_id] = run
        if self.execute:
            threading.Thread(target=self._execute, args=(run,), daemon=True).start()
        return {"run_id": run.run_id}

    def _run(self, query: dict[str, Any]) -> FakeRun:
        try:
            run_id = int(query.get("run_id", ""))
        except ValueError:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "run_id must be an integer") from None
        for run in self.runs.values():
            if run_id in (run.run_id, run.task_run_id):
                return run
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")

    def _runs_get(self, query: dict[str, str]) -> Any:
        run = self._run(query)
        task = dict(run.body["tasks"][0])
        task.update(run_id=run.task_run_id, state=run.state, attempt_number=0)
        answer = {
            "job_id": run.job_id,
            "run_id": run.run_id,
            "run_name": run.body.get("run_name", "Untitled"),
            "number_in_job": run.run_id,
            "state": run.state,
            "tasks": [task],
            "run_page_url": f"{self.url}/?o=1234567890#job/{run.job_id}/run/{run.run_id}",
            "run_type": "SUBMIT_RUN",
            "format": "MULTI_TASK",
        }
        if run.termination is not None:
            answer["status"] = {"state": "TERMINATED", "termination_details": run.termination}
        return answer

    def _get_output(self, query: dict[str, str]) -> Any:
        run = self._run(query)
        if int(query["run_id"]) == run.run_id:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                "Retrieving the output of runs with multiple tasks is not supported. Please "
                "retrieve the output of each individual task run instead.",
            )
        return {**run.output, "metadata": {"run_id": run.task_run_id, "state": run.state}}

    def _cancel(self, body: dict[str, Any]) -> Any:
        run = self._run(body)
        if run.state.get("life_cycle_state") not in ("TERMINATED", "SKIPPED", "INTERNAL_ERROR"):
            run.cancelled = True
            if run.process is not None and run.process.poll() is None:
                run.state = {"life_cycle_state": "TERMINATING", "state_message": "Run cancelled."}
                os.killpg(run.process.pid, signal.SIGTERM)  # _execute records the end
            else:
                run.state = {
                    "life_cycle_state": "TERMINATED",
                    "result_state": "CANCELED",
                    "state_message": "Run cancelled.",
                }
        return {}

    # --- a driver of our own (execute=True) -------------------------------------------------

    def _driver_python(self) -> Path:
        """The driver's Python: a venv of this one without reprorun (made once), so the job
        imports only the client it ships."""
        python = self._mount.parent / f"{self._mount.name}-python" / "bin" / "python"
        with self._lock:
            if not python.exists():
                subprocess.run(
                    [sys.executable, "-m", "venv", "--without-pip", str(python.parent.parent)],
                    check=True,
                    timeout=120,
                )
        return python

    def _execute(self, run: FakeRun) -> None:
        task = run.body["tasks"][0]["spark_python_task"]
        with self._lock:
            for path, data in self.dbfs.items():  # the /dbfs mount of the cluster's nodes
                local = self._mount / path.lstrip("/")
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
        launcher = self._mount / task["python_file"][len("dbfs:/") :]
        python = self._driver_python()
        params = [p.replace("=/dbfs/", f"={self._mount}/", 1) for p in task.get("parameters", [])]
        # A driver's environment: none of this test process's variables.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._mount),
            "LANG": "C.UTF-8",
        }
        with tempfile.TemporaryFile() as err:
            with self._lock:
                if run.cancelled:
                    return
                run.state = {"life_cycle_state": "RUNNING", "state_message": ""}
                run.output = {"logs": ""}
                process = subprocess.Popen(
                    [str(python), str(launcher), *params],
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=env,
                    cwd=self._mount,
                    start_new_session=True,
                )
                run.process = process
            stdout = process.stdout
            assert isinstance(stdout, io.BufferedReader)
            with stdout:
                for chunk in iter(lambda: stdout.read1(4096), b""):
                    run.output = {"logs": run.output["logs"] + chunk.decode("utf-8", "replace")}
            code = process.wait()
            err.seek(0)
            trace = err.read().decode("utf-8", "replace")
        lines = [line for line in trace.splitlines() if line.strip()]
        if run.cancelled:
            run.state = {
                "life_cycle_state": "TERMINATED",
                "result_state": "CANCELED",
                "state_message": "Run cancelled.",
            }
        elif code == 0:
            run.state = {
                "life_cycle_state": "TERMINATED",
                "result_state": "SUCCESS",
                "state_message": "",
            }
        else:
            run.state = {
                "life_cycle_state": "TERMINATED",
                "result_state": "FAILED",
                "state_message": "Workload failed, see run output for details",
            }
            run.output = {
                **run.output,
                "error": lines[-1] if lines else f"exit code {code}",
                "error_trace": trace,
            }


def _dbfs_path(path: Any) -> str:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Path must be absolute: {path!r}")
    return path


def _block(data: Any) -> bytes:
    try:
        raw = base64.b64decode(str(data), validate=True)
    except ValueError:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "data is not base64") from None
    if len(raw) > MAX_BLOCK:
        raise ApiError(
            400,
            "MAX_BLOCK_SIZE_EXCEEDED",
            f"The block of data exceeds the 1 MB limit ({len(raw)} bytes).",
        )
    return raw


def _handler(workspace: FakeWorkspace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            auth = self.headers.get("Authorization", "")
            try:
                if not auth.startswith("Bearer "):
                    raise ApiError(
                        401,
                        "401",
                        "Credential was not sent or was of an unsupported type for this API.",
                    )
                workspace.tokens_seen.append(auth[len("Bearer ") :])
                if auth[len("Bearer ") :] != workspace.token:
                    raise ApiError(403, "403", "Invalid access token.")
                workspace.requests.append((method, url.path))
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    raise ApiError(
                        400, "MALFORMED_REQUEST", "Invalid JSON given in the body of the request"
                    ) from None
                answer = workspace.handle(method, url.path, query, body)
                self._send(200, answer)
            except ApiError as exc:
                self._send(
                    exc.status, {"error_code": exc.code, "message": exc.message}, exc.headers
                )

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
