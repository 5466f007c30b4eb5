"""Scoring servers for the serving tests and bench/serving.py: `reprorun models serve` and
MLflow's `mlflow models serve` in subprocesses on free loopback ports, and a small sklearn
model saved or logged by the real MLflow client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import stop_process
from tests.integration.mlflow_env import free_port

COLUMNS = ["sl", "sw", "pl", "pw"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]

# Run with the MLflow client's Python: saves (or logs, with a tracking URI) an iris classifier
# with a column signature, and writes its predictions for ROWS.
SAVE_MODEL = """
import json, sys
import pandas as pd
import mlflow, mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

target, report = sys.argv[1], sys.argv[2]
x, y = load_iris(return_X_y=True, as_frame=True)
x.columns = @COLUMNS@
model = LogisticRegression(max_iter=300).fit(x, y)
signature = infer_signature(x, model.predict(x))
rows = pd.DataFrame(@ROWS@, columns=@COLUMNS@)
out = {"predictions": [int(v) for v in model.predict(rows)]}
if target.startswith("log:"):
    mlflow.set_experiment("serving")
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(model, name=target[4:], signature=signature)
    out["run_id"] = run.info.run_id
else:
    mlflow.sklearn.save_model(model, target, signature=signature)
open(report, "w").write(json.dumps(out))
""".replace("@COLUMNS@", repr(COLUMNS)).replace("@ROWS@", repr(ROWS))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPRORUN_", "MLFLOW_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", **extra)
    return env


def mlflow_model(python: Path, target: str, work: Path, **env: str) -> dict[str, Any]:
    """Save (a folder path) or log (``log:NAME``, to ``MLFLOW_TRACKING_URI`` in ``env``) the
    iris model with the real MLflow client; its predictions for ROWS (and run id)."""
    work.mkdir(parents=True, exist_ok=True)
    script, report = work / "save_model.py", work / "save_model.json"
    script.write_text(SAVE_MODEL)
    done = subprocess.run(
        [str(python), str(script), target, str(report)],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
    )
    if done.returncode != 0:
        raise AssertionError(f"saving the model failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(report.read_text())
    return result


class ScoringServer:
    """A scoring server in a subprocess; ``start`` returns once it answers ``/ping``."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.port = int(argv[argv.index("--port") + 1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.started_in: float | None = None

    @classmethod
    def reprorun(cls, uri: str, home: Path, log: Path, *extra: str, **env: str) -> ScoringServer:
        argv = [sys.executable, "-m", "reprorun", "models", "serve", "-m", uri]
        argv += ["--port", str(free_port()), *extra]
        return cls(argv, clean_env(REPRORUN_HOME=str(home), **env), log)

    @classmethod
    def mlflow(cls, python: Path, model: Path, log: Path) -> ScoringServer:
        bin_dir = Path(python).parent
        argv = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(model)]
        argv += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(free_port())]
        # it runs `uvicorn` from PATH, as in an activated virtualenv
        env = clean_env(PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
        return cls(argv, env, log)

    def start(self, timeout: float = 600) -> ScoringServer:
        started = time.monotonic()
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.argv[:5]} exited with {self.process.returncode} before answering "
                    f"/ping:\n{self.output('')}"
                )
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as response:
                    if response.status == 200:
                        self.started_in = time.monotonic() - started
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - started > timeout:
                self.stop()
                raise AssertionError(f"no answer on {self.url}/ping:\n{self.output('')}")
            time.sleep(0.05)

    def output(self, waiting_for: str = "Serving ") -> str:
        """What the server printed, once it holds ``waiting_for`` (the line saying where it
        serves comes just after it starts answering)."""
        deadline = time.monotonic() + 15
        while True:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if waiting_for in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)

    def post(self, body: bytes | str, ctype: str | None = "application/json") -> tuple[int, Any]:
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(self.url + "/invocations", data=data, method="POST")
        if ctype:
            request.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.status, response.read().decode()
