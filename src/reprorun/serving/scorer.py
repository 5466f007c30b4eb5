"""The scoring process: ``python -m reprorun.clients.scoring`` with the model environment's
interpreter (reprorun's client is on its path), or the same code in this process when the
environment is ``local``."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from reprorun.envs.base import PreparedEnv, Progress
from reprorun.errors import ExecutionError, UserInputError

START_TIMEOUT = 300.0  # seconds for the model to load (a large model, a cold disk)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _child_env(prepared: PreparedEnv) -> dict[str, str]:
    env = {**os.environ, **prepared.env_vars}
    if prepared.path_prefix:
        env["PATH"] = os.pathsep.join([*prepared.path_prefix, env.get("PATH", "")])
    env.pop("PYTHONPATH", None)  # the model's environment, not reprorun's
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _python(prepared: PreparedEnv) -> str:
    if not prepared.python:
        raise UserInputError(f"The {prepared.name} environment has no Python interpreter.")
    return prepared.python


@dataclass
class Scorer:
    """A running scoring server: its address, and the process (None when in this process)."""

    host: str
    port: int
    process: subprocess.Popen[str] | None = None
    thread: threading.Thread | None = None
    server: Any = None
    release: Callable[[], None] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def wait(self) -> int:
        """Block until the server stops (Ctrl-C or SIGTERM stops it); its exit status."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            if self.process is not None:
                return self.process.wait()
            while self.thread is not None and self.thread.is_alive():
                self.thread.join(0.5)
            return 0
        except KeyboardInterrupt:
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.release is not None:
            self.release()
            self.release = None


def start_scorer(
    folder: Path,
    prepared: PreparedEnv | None,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    max_body: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> Scorer:
    """Start serving the model in ``folder``; returns once it answers. ``prepared`` None:
    in this process, on a thread."""
    from reprorun.clients import scoring

    limit = max_body or scoring.DEFAULT_MAX_BODY
    if prepared is None:
        try:
            model = scoring.Model(folder)
        except scoring.ModelLoadError as exc:
            raise UserInputError(str(exc)) from None
        try:
            server = scoring.make_server(model, host, port, limit)
        except OSError as exc:
            raise UserInputError(f"Cannot listen on {host}:{port}: {exc}") from None
        thread = threading.Thread(target=server.serve_forever, name="reprorun-scoring", daemon=True)
        thread.start()
        bound = server.server_address
        return Scorer(str(bound[0]), int(bound[1]), thread=thread, server=server)
    argv = [
        _python(prepared),
        "-m",
        "reprorun.clients.scoring",
        "serve",
        "--model-dir",
        str(folder),
        "--host",
        host,
        "--port",
        str(port),
        "--max-body",
        str(limit),
        "--exit-with-parent",  # it holds our pipe: if this process is killed, the server ends
    ]
    process = subprocess.Popen(
        argv,
        env=_child_env(prepared),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert process.stdout is not None
    output: list[str] = []
    ready = _wait_ready(process, process.stdout, output, scoring.READY)
    if ready is None:
        process.kill()
        process.wait()
        tail = "".join(output[-20:]).strip()
        if process.returncode == 2 and tail.startswith("Error: ") and "\n" not in tail:
            raise UserInputError(tail.removeprefix("Error: "))  # the model or the address
        raise ExecutionError(
            f"The scoring process for {folder} stopped before serving "
            f"(exit {process.returncode}):\n{tail}"
        )
    # keep reading (and echoing) what the process prints, so its pipe never fills
    threading.Thread(
        target=_pump, args=(process.stdout, echo), name="reprorun-scoring-log", daemon=True
    ).start()
    return Scorer(ready[0], ready[1], process=process, release=prepared.release, output=output)


def _wait_ready(
    process: subprocess.Popen[str], stream: IO[str], output: list[str], marker: str
) -> tuple[str, int] | None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            return None
        if line.startswith(marker):
            _, host, port = line.split()
            return host, int(port)
        output.append(line)
    return None


def _pump(stream: IO[str], echo: Callable[[str], None] | None) -> None:
    for line in stream:
        if echo is not None:
            echo(line.rstrip("\n"))


def predict_file(
    folder: Path,
    prepared: PreparedEnv | None,
    source: Path,
    target: Path | None,
    *,
    input_format: str | None = None,
    output_format: str | None = None,
    rows: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Score the file ``source`` into ``target`` (stdout when None), in batches of ``rows``."""
    from reprorun.clients import scoring

    if not source.is_file():
        raise UserInputError(f"No input file {source}.")
    chunk = rows or scoring.CHUNK_ROWS
    if prepared is None:
        try:
            model = scoring.Model(folder)
        except scoring.ModelLoadError as exc:
            raise UserInputError(str(exc)) from None
        try:
            return scoring.predict_file(
                model,
                source,
                target,
                input_format=input_format,
                output_format=output_format,
                rows=chunk,
            )
        except scoring.ScoringError as exc:
            raise UserInputError(str(exc)) from None
        finally:
            model.close()
    argv = [
        _python(prepared),
        "-m",
        "reprorun.clients.scoring",
        "predict",
        "--model-dir",
        str(folder),
        "--input",
        str(source.resolve()),
        "--rows",
        str(chunk),
        *(["--output", str(target.resolve())] if target is not None else []),
        *(["--input-format", input_format] if input_format else []),
        *(["--output-format", output_format] if output_format else []),
    ]
    done = subprocess.run(
        argv,
        env=_child_env(prepared),
        stdout=None if target is None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = done.stderr.splitlines()
    for line in lines:
        if line.startswith(scoring.READY):
            return int(line.split()[1])
    message = "\n".join(lines[-20:]).strip()
    if done.returncode == 2 and message.startswith("Error: "):
        raise UserInputError(message.removeprefix("Error: "))
    raise ExecutionError(f"Scoring {source} failed (exit {done.returncode}):\n{message}")
