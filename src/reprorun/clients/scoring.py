"""The scoring server and batch scorer of ``reprorun models serve|predict``, run inside a model's
own environment (``python -m reprorun.clients.scoring serve|predict ...``) or, with
``--env-manager local``, inside reprorun's process.

Standard library only: pandas, numpy, pyarrow and mlflow are used when the environment has
them. MLflow's scoring protocol (``mlflow/pyfunc/scoring_server``): ``POST /invocations`` takes
JSON with exactly one of ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``
(plus optional ``params``) or CSV, and answers ``{"predictions": ...}``; errors are
``{"error_code": "BAD_REQUEST", "message": ...}``; ``GET /ping``, ``/health``, ``/version``.
An MLflow ``python_function`` model in an environment that has mlflow is scored by MLflow's
own request parser and schema enforcement, so answers match ``mlflow models serve``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import math
import os
import pickle
import socket
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

DEFAULT_MAX_BODY = 64 * 1024 * 1024  # bytes; larger requests get 413
DRAIN_LIMIT = 1024 * 1024 * 1024  # read (and drop) up to this much of a too-large body
CHUNK_ROWS = 10_000
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPES = ("application/json", "text/csv")
REQUIRED_INPUT_FORMAT = (
    "The input must be a JSON dictionary with exactly one of the input fields "
    "{'dataframe_split', 'dataframe_records', 'instances', 'inputs'}"
)
NUMERIC_TYPES = {"double", "float", "long", "integer"}
READY = "reprorun-scoring-ready"


class ScoringError(Exception):
    """A request the model cannot score; ``status`` and ``error_code`` as MLflow answers."""

    def __init__(self, message: str, status: int = 400, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code

    def to_json(self) -> bytes:
        return json.dumps({"error_code": self.error_code, "message": self.message}).encode()


class ModelLoadError(Exception):
    """The model folder cannot be loaded here (the message says why and what to do)."""


@dataclass
class Table:
    """A batch of rows: ``frame`` (a pandas DataFrame) or ``rows`` with optional ``columns``;
    ``tensor`` for ``instances``/``inputs`` given as plain (nested) lists."""

    columns: list[str] | None = None
    rows: list[Any] | None = None
    frame: Any = None
    tensor: Any = None
    text: bool = False  # rows of CSV strings, not yet read as numbers

    def __len__(self) -> int:
        if self.frame is not None:
            return len(self.frame)
        if self.rows is not None:
            return len(self.rows)
        return len(self.tensor) if isinstance(self.tensor, list) else 1


def _optional(name: str) -> Any:
    """The module ``name``, or None when this environment does not have it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def read_mlmodel(directory: Path) -> dict[str, Any]:
    """The MLmodel file: JSON (reprorun's) or YAML (MLflow's; needs PyYAML, which mlflow has)."""
    path = directory / "MLmodel"
    if not path.is_file():
        raise ModelLoadError(f"No MLmodel file in {directory}: not a model folder.")
    text = path.read_text(encoding="utf-8")
    try:
        loaded = json.loads(text)
    except ValueError:
        yaml = _optional("yaml")
        if yaml is None:
            raise ModelLoadError(
                f"{path} is YAML and this environment has no PyYAML: add pyyaml to the "
                "model's requirements.txt."
            ) from None
        loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise ModelLoadError(f"{path} is not an MLmodel mapping.")
    return loaded


def _signature_columns(mlmodel: dict[str, Any]) -> tuple[list[str] | None, dict[str, str]]:
    """Input column names and types of the model's signature (column-based only)."""
    signature = mlmodel.get("signature")
    if not isinstance(signature, dict) or not signature.get("inputs"):
        return None, {}
    try:
        inputs = json.loads(signature["inputs"])
    except (TypeError, ValueError):
        return None, {}
    if not isinstance(inputs, list) or not all(
        isinstance(i, dict) and "name" in i and i.get("type") != "tensor" for i in inputs
    ):
        return None, {}
    return [str(i["name"]) for i in inputs], {str(i["name"]): str(i.get("type")) for i in inputs}


class Model:
    """A loaded model and how to score a batch with it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.mlmodel = read_mlmodel(directory)
        flavors = self.mlmodel.get("flavors") or {}
        if not isinstance(flavors, dict):
            raise ModelLoadError(f"{directory / 'MLmodel'} has no flavors mapping.")
        self.flavors = flavors
        self.pyfunc: Any = None
        self.obj: Any = None
        self.fast: Any = None  # the sklearn estimator behind an MLflow pyfunc model
        self.columns, self.types = _signature_columns(self.mlmodel)
        if "reprorun_pickle" in flavors:
            self.obj = self._unpickle(flavors["reprorun_pickle"].get("pickled_model", "model.pkl"))
        elif "python_function" in flavors and _optional("mlflow") is not None:
            self.pyfunc = _optional("mlflow.pyfunc").load_model(str(directory))
            self.fast = self._fast_model(flavors["python_function"])
        elif "sklearn" in flavors:
            self.obj = self._sklearn(flavors["sklearn"])
        elif "crate" in flavors:
            self.obj = RCrate(directory)
        elif "python_function" in flavors:
            loader = flavors["python_function"].get("loader_module", "?")
            raise ModelLoadError(
                f"{directory} is an MLflow python_function model (loader {loader}) and this "
                "environment has no mlflow: serve it in its own environment "
                "(--env-manager uv or virtualenv), which installs its requirements."
            )
        else:
            raise ModelLoadError(
                f"{directory}: no flavor reprorun can score "
                f"(flavors: {', '.join(sorted(flavors))})."
            )
        if self.columns is None and self.obj is not None:
            names = getattr(self.obj, "feature_names_in_", None)
            if names is not None:
                self.columns = [str(n) for n in names]

    def _sklearn(self, flavor: dict[str, Any]) -> Any:
        """MLflow's sklearn flavor without mlflow: a pickle, a cloudpickle or a skops file."""
        name = str(flavor.get("pickled_model", "model.pkl"))
        if flavor.get("serialization_format") != "skops":
            return self._unpickle(name)
        skops_io = _optional("skops.io")
        if skops_io is None:
            raise ModelLoadError(
                f"{self.directory / name} is saved with skops, which this environment lacks: "
                "serve the model in its own environment (--env-manager uv or virtualenv)."
            )
        path = self.directory / name
        trusted = flavor.get("skops_trusted_types") or skops_io.get_untrusted_types(file=path)
        return skops_io.load(path, trusted=trusted)

    def _unpickle(self, name: str) -> Any:
        path = self.directory / name
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh)  # noqa: S301 - the user's own model, as load_model does
        except (OSError, pickle.UnpicklingError, ImportError, AttributeError, EOFError) as exc:
            raise ModelLoadError(
                f"Cannot load {path}: {exc}. The model's environment may lack a package it needs "
                "(serve it with --env-manager uv to build it from the model's requirements)."
            ) from exc

    @property
    def input_schema(self) -> Any:
        return self.pyfunc.metadata.get_input_schema() if self.pyfunc is not None else None

    # -- scoring a batch -------------------------------------------------------------------
    def predict(self, table: Table, params: Any = None) -> Any:
        data = self._model_input(table)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if self.pyfunc is not None:
                    return (
                        self.pyfunc.predict(data, params=params)
                        if params
                        else (self.pyfunc.predict(data))
                    )
                predict = getattr(self.obj, "predict", None) or self.obj
                return predict(data)
        except ScoringError:
            raise
        except Exception as exc:
            raise ScoringError(
                "Encountered an unexpected error while evaluating the model. Verify that the "
                f"serialized input Dataframe is compatible with the model for inference. "
                f"Error: {type(exc).__name__}: {exc}"
            ) from exc

    def _model_input(self, table: Table) -> Any:
        pandas = _optional("pandas")
        if table.frame is not None:
            frame = table.frame
            if self.columns is not None and self.pyfunc is None:
                self._check_columns([str(c) for c in frame.columns])
                frame = frame[self.columns]
            return frame
        if table.rows is None:  # a tensor
            numpy = _optional("numpy")
            return numpy.asarray(table.tensor) if numpy is not None else table.tensor
        crate = isinstance(self.obj, RCrate)
        if table.text:
            numbers = None if crate else self._numeric_text(table)
            if numbers is not None:
                return numbers
            table = Table(table.columns, [[_cell(v) for v in row] for row in table.rows])
        columns, rows = table.columns, table.rows
        assert rows is not None
        if columns is not None and self.columns is not None:
            self._check_columns(columns)
            if columns != self.columns:
                index = [columns.index(c) for c in self.columns]
                rows = [[row[i] for i in index] for row in rows]
                columns = list(self.columns)
        width = len(columns) if columns is not None else None
        if width is None and self.columns is not None:
            width, columns = len(self.columns), list(self.columns)
        for number, row in enumerate(rows):
            if not isinstance(row, list) or (width is not None and len(row) != width):
                raise ScoringError(
                    f"Row {number} has {len(row) if isinstance(row, list) else 'no'} values; "
                    f"the model takes {width} ({', '.join(columns or [])})."
                )
        if columns is not None and self.types:
            self._check_types(columns, rows)
        if crate:  # R reads JSON records as a data.frame with these column names
            return [dict(zip(columns, row, strict=True)) for row in rows] if columns else rows
        if pandas is not None:
            return pandas.DataFrame(rows, columns=columns)
        numpy = _optional("numpy")
        if numpy is not None:
            return numpy.asarray(rows, dtype=float if self._numeric(columns) else None)
        return rows

    def _numeric_text(self, table: Table) -> Any:
        """CSV rows as a float array read by numpy (fast), when every column is numeric."""
        numpy = _optional("numpy")
        if numpy is None or _optional("pandas") is not None or table.columns is None:
            return None
        if self.types and not self._numeric(self.columns):
            return None
        try:
            array = numpy.asarray(table.rows, dtype=float)
        except ValueError:
            return None  # text, gaps or ragged rows: read cell by cell, with clear errors
        if self.columns is not None:
            self._check_columns(table.columns)
            if table.columns != self.columns:
                array = array[:, [table.columns.index(c) for c in self.columns]]
        return array

    def _numeric(self, columns: list[str] | None) -> bool:
        return bool(columns) and all(self.types.get(c) in NUMERIC_TYPES for c in columns or [])

    def _check_columns(self, given: list[str]) -> None:
        assert self.columns is not None
        missing = [c for c in self.columns if c not in given]
        if missing:
            extra = [c for c in given if c not in self.columns]
            raise ScoringError(
                f"Model is missing inputs {missing}."
                + (f" Note that there were extra inputs: {extra}." if extra else "")
            )

    def _check_types(self, columns: list[str], rows: list[Any]) -> None:
        for position, name in enumerate(columns):
            if self.types.get(name) not in NUMERIC_TYPES:
                continue
            for row in rows:
                value = row[position]
                if value is None or (
                    isinstance(value, (int, float)) and not isinstance(value, bool)
                ):
                    continue
                raise ScoringError(
                    f"Incompatible input types for column {name}. Can not safely convert "
                    f"{type(value).__name__} value {value!r} to {self.types[name]}."
                )

    # -- the HTTP protocol -----------------------------------------------------------------
    def invocations(self, body: bytes, content_type: str | None) -> tuple[int, bytes, str]:
        """(status, body, media type) of a ``POST /invocations``."""
        mime, charset = _content_type(content_type)
        if charset != "utf-8":
            raise ScoringError("The scoring server only supports UTF-8", status=415)
        if mime not in CONTENT_TYPES:
            raise ScoringError(
                f"This predictor only supports the following content types: "
                f"{list(CONTENT_TYPES)}. Got {content_type or 'no Content-Type'!r}.",
                status=415,
            )
        if self.pyfunc is not None:
            answer = self._fast_invocations(body) if self.fast is not None else None
            return answer or self._mlflow_invocations(body, content_type or mime)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScoringError(
                f"Ensure that input is a valid UTF-8 encoded string: {exc}"
            ) from None
        if mime == "text/csv":
            table, params = read_csv_text(text), None
        else:
            table, params = parse_json_request(text)
        predictions = self.predict(table, params)
        return 200, dumps({"predictions": jsonable(predictions)}), "application/json"

    def _fast_model(self, pyfunc_flavor: dict[str, Any]) -> Any:
        """The estimator of an MLflow sklearn model whose signature is numeric columns: a
        request of plain numbers for exactly those columns skips pandas (MLflow's DataFrame
        and schema enforcement cost ~10 ms a request); anything else goes to MLflow's path."""
        if pyfunc_flavor.get("loader_module") != "mlflow.sklearn" or not self.columns:
            return None
        if not self._numeric(self.columns):
            return None
        try:
            raw = self.pyfunc.get_raw_model()
        except Exception:
            return None
        return raw if callable(getattr(raw, "predict", None)) else None

    def _fast_invocations(self, body: bytes) -> tuple[int, bytes, str] | None:
        """The answer for a JSON request of numbers for the signature's columns, or None
        (MLflow's own path answers: every error, CSV, params, other shapes)."""
        numpy = _optional("numpy")
        try:
            table, params = parse_json_request(body.decode("utf-8"))
            if params is not None or table.columns is None or table.rows is None or numpy is None:
                return None
            assert self.columns is not None
            if sorted(table.columns) != sorted(self.columns):
                return None
            index = [table.columns.index(c) for c in self.columns]
            rows = [[row[i] for i in index] for row in table.rows]
            if not rows or any(
                type(v) not in (int, float) or v != v  # v != v: NaN
                for row in rows
                for v in row
            ):
                return None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                predictions = self.fast.predict(numpy.asarray(rows, dtype=float))
        except Exception:
            return None
        return 200, dumps({"predictions": jsonable(predictions)}), "application/json"

    def _mlflow_invocations(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        mlflow_exception = _optional("mlflow.exceptions").MlflowException
        scoring_server = _optional("mlflow.pyfunc.scoring_server")

        try:
            result = scoring_server.invocations(body, content_type, self.pyfunc, self.input_schema)
        except mlflow_exception as exc:
            payload = json.loads(exc.serialize_as_json())
            payload.pop("stack_trace", None)
            return exc.get_http_status_code(), json.dumps(payload).encode(), "application/json"
        response = result.response
        return (
            int(result.status),
            response.encode() if isinstance(response, str) else bytes(response),
            str(result.mimetype),
        )


class RCrate:
    """An R function (carrier::crate) scored by one ``Rscript`` process (``scoring.R``):
    batches go to it as JSON records and predictions come back, one batch at a time."""

    START_TIMEOUT = 120.0

    def __init__(self, directory: Path) -> None:
        import shutil
        import subprocess

        rscript = shutil.which("Rscript")
        if rscript is None:
            raise ModelLoadError(
                f"{directory} is an R function (carrier::crate): scoring it needs Rscript on "
                "PATH, with the carrier and jsonlite packages."
            )
        script = Path(__file__).with_name("scoring.R")
        self.process = subprocess.Popen(
            [rscript, "--vanilla", str(script), str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lock = threading.Lock()
        try:
            self._read()
        except ScoringError as exc:
            self.close()
            raise ModelLoadError(f"Cannot load the R model in {directory}: {exc.message}") from None

    def _read(self) -> Any:
        assert self.process.stdout is not None
        header = self.process.stdout.readline()
        if not header.strip():
            self.process.wait(10)
            assert self.process.stderr is not None
            error = self.process.stderr.read().decode(errors="replace").strip()
            raise ScoringError(f"Rscript stopped: {error[-2000:]}", 500, "INTERNAL_ERROR")
        answer = json.loads(self.process.stdout.read(int(header)))
        if not answer.get("ok"):
            raise ScoringError(f"The R model failed: {answer.get('message')}")
        return answer.get("predictions")

    def predict(self, data: Any) -> Any:
        records = _records_of(data)
        payload = json.dumps(records, default=_default).encode()
        with self.lock:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(f"{len(payload)}\n".encode() + payload)
                self.process.stdin.flush()
            except (BrokenPipeError, OSError):
                raise ScoringError(
                    "The R scoring process has stopped.", 500, "INTERNAL_ERROR"
                ) from None
            return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _records_of(data: Any) -> Any:
    """A model input as JSON for R: a data frame as records, an array as nested lists."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        return data.to_dict(orient="records")
    if hasattr(data, "tolist"):
        return data.tolist()
    return data


def _content_type(header: str | None) -> tuple[str, str]:
    parts = [p.strip() for p in (header or "").split(";")]
    params = {
        k.strip().lower(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in parts[1:])
    }
    unknown = set(params) - {"charset"}
    if unknown:
        raise ScoringError(
            f"Unrecognized content type parameters: {', '.join(sorted(unknown))}.", status=415
        )
    return parts[0].lower(), params.get("charset", "utf-8").lower()


# -- parsing -------------------------------------------------------------------------------
def parse_json_request(text: str) -> tuple[Table, Any]:
    """A JSON request body as MLflow reads it: (the batch, its ``params``)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ScoringError(
            f"Ensure that input is a valid JSON formatted string. Error: '{exc}'"
        ) from None
    if isinstance(doc, list):
        raise ScoringError(f"{REQUIRED_INPUT_FORMAT}. Received a list.")
    if not isinstance(doc, dict):
        raise ScoringError(
            f"{REQUIRED_INPUT_FORMAT}. Received unexpected input type '{type(doc)}'."
        )
    keys = [k for k in FORMATS if k in doc]
    if len(keys) != 1:
        raise ScoringError(
            f"{REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: {list(doc)}."
        )
    key = keys[0]
    return table_of(key, doc[key]), doc.get("params")


def table_of(key: str, value: Any) -> Table:
    """The batch that one of MLflow's input fields holds."""
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise ScoringError(
                f"Dataframe records format must be a list of records. Got {type(value).__name__}."
            )
        return _records(value, key)
    if key == "dataframe_split":
        if not isinstance(value, dict):
            raise ScoringError(
                f"Dataframe split format must be a dictionary. Got {type(value).__name__}."
            )
        keys = set(value)
        if "data" not in keys or keys - {"columns", "data", "index"}:
            raise ScoringError(
                "Dataframe split format must have 'data' field and optionally 'columns' and "
                f"'index' fields. Got {sorted(keys)}."
            )
        columns, data = value.get("columns"), value["data"]
        if not isinstance(data, list) or (columns is not None and not isinstance(columns, list)):
            raise ScoringError(
                "dataframe_split: 'data' must be a list of rows and 'columns' a list."
            )
        rows = [row if isinstance(row, list) else [row] for row in data]
        return Table(columns=[str(c) for c in columns] if columns is not None else None, rows=rows)
    # instances / inputs (TF serving): records, a mapping of columns, or a plain tensor
    if isinstance(value, dict):
        columns = [str(k) for k in value]
        lists = [v if isinstance(v, list) else [v] for v in value.values()]
        if len({len(v) for v in lists}) > 1:
            raise ScoringError(f"The columns of '{key}' must all have the same length.")
        return Table(columns=columns, rows=[list(r) for r in zip(*lists, strict=True)])
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _records(value, key)
    if isinstance(value, list):
        return Table(tensor=value)
    raise ScoringError(
        f"'{key}' must be a list or a mapping of columns, not {type(value).__name__}."
    )


def _records(records: list[Any], key: str) -> Table:
    columns: list[str] = []
    seen: set[str] = set()
    for record in records:
        if not isinstance(record, dict):
            raise ScoringError(f"'{key}' must be a list of records (JSON objects).")
        for name in record:
            if name not in seen:
                seen.add(name)
                columns.append(name)
    return Table(columns=columns, rows=[[r.get(c) for c in columns] for r in records])


def _cell(text: str) -> Any:
    """A CSV value: None when empty, a number when it reads as one, else the text."""
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(text) if text.lstrip("+-").isdigit() else number


def read_csv_text(text: str) -> Table:
    pandas = _optional("pandas")
    if pandas is not None:
        try:
            return Table(frame=pandas.read_csv(io.StringIO(text)))
        except Exception as exc:
            raise ScoringError(
                "Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid "
                f"CSV-formatted Pandas DataFrame produced using the `pandas.DataFrame.to_csv()` "
                f"method. Error: '{exc}'"
            ) from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise ScoringError("Failed to parse input as CSV: no header row.")
    return Table(columns=header, rows=[row for row in reader if row], text=True)


# -- answers -------------------------------------------------------------------------------
def jsonable(predictions: Any) -> Any:
    """Predictions as MLflow returns them: a DataFrame as records, arrays and Series as lists."""
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):
        return predictions.to_dict(orient="records")
    if hasattr(predictions, "tolist"):
        return predictions.tolist()
    if isinstance(predictions, dict):
        return {str(k): jsonable(v) for k, v in predictions.items()}
    if isinstance(predictions, (list, tuple)):
        return [jsonable(v) for v in predictions]
    return predictions


def _default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=_default).encode()


# -- the server ------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], model: Model, max_body: int, version: str) -> None:
        super().__init__(address, _Handler)
        self.model = model
        self.max_body = max_body
        self.version = version


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one send (flushed after each request), and TCP_NODELAY: a
    # keep-alive client would otherwise wait ~40 ms on Nagle and delayed ACKs.
    wbufsize = 1 << 16
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("REPRORUN_SCORING_ACCESS_LOG"):
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, media: str, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _error(self, exc: ScoringError, close: bool = False) -> None:
        self._send(exc.status, exc.to_json(), "application/json", close)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/ping", "/health"):
            self._send(200, b"\n", "application/json")
        elif path == "/version":
            self._send(200, self.server.version.encode(), "application/json")
        else:
            self._error(ScoringError(f"No endpoint GET {path}", 404, "ENDPOINT_NOT_FOUND"))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._body()
            if body is None:
                return
            if path != "/invocations":
                raise ScoringError(f"No endpoint POST {path}", 404, "ENDPOINT_NOT_FOUND")
            status, payload, media = self.server.model.invocations(
                body, self.headers.get("Content-Type")
            )
            self._send(status, payload, media)
        except ScoringError as exc:
            self._error(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # never let a request take the server down
            traceback.print_exc(file=sys.stderr)
            self._error(ScoringError(f"{type(exc).__name__}: {exc}", 500, "INTERNAL_ERROR"))

    def _too_large(self, size: str) -> None:
        limit = self.server.max_body
        self._error(
            ScoringError(
                f"The request body ({size}) is larger than this server takes "
                f"({limit} bytes; reprorun models serve --max-request-size); send the rows in "
                "smaller batches, or score a file with reprorun models predict.",
                413,
                "REQUEST_TOO_LARGE",
            ),
            close=True,
        )

    def _body(self) -> bytes | None:
        """The request body, or None after answering 413 (or 400 for a bad length)."""
        limit = self.server.max_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._chunked(limit)
        raw = self.headers.get("Content-Length", "0")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self._error(ScoringError(f"Bad Content-Length {raw!r}"), close=True)
            return None
        if length > limit:
            if length <= DRAIN_LIMIT:  # read it, so the client sees the answer, not a reset
                self._drain(length)
            self._too_large(f"{length} bytes")
            return None
        return self.rfile.read(length)

    def _drain(self, length: int) -> None:
        while length > 0:
            got = self.rfile.read(min(length, 1 << 20))
            if not got:
                return
            length -= len(got)

    def _chunked(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                self._error(ScoringError("Bad chunked request body"), close=True)
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            total += size
            if total > DRAIN_LIMIT:
                break
            if total > limit:  # keep reading (dropping) to the end, then answer 413
                parts.clear()
                self._drain(size)
            else:
                parts.append(self.rfile.read(size))
            self.rfile.readline(1024)
        if total > limit:
            self._too_large(f"{total} bytes" if total <= DRAIN_LIMIT else "over 1 GiB")
            return None
        return b"".join(parts)


def make_server(
    model: Model, host: str, port: int, max_body: int = DEFAULT_MAX_BODY, version: str = ""
) -> ThreadingHTTPServer:
    return _Server((host, port), model, max_body, version or _version())


def _version() -> str:
    mlflow = _optional("mlflow")
    if mlflow is not None and getattr(mlflow, "__version__", None):
        return str(mlflow.__version__)
    try:
        from reprorun._version import __version__

        return __version__
    except ImportError:
        return "unknown"


def serve(
    model: Model,
    host: str,
    port: int,
    max_body: int = DEFAULT_MAX_BODY,
    announce: Callable[[str, int], None] | None = None,
) -> None:
    """Serve until interrupted; ``announce(host, port)`` once listening."""
    server = make_server(model, host, port, max_body)
    bound_host, bound_port = server.server_address[:2]
    if announce is not None:
        announce(str(bound_host), int(bound_port))
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# -- batch scoring -----------------------------------------------------------------------
def file_format(path: Path, given: str | None = None) -> str:
    fmt = (given or path.suffix.lstrip(".")).lower()
    fmt = {"jsonl": "jsonl", "ndjson": "jsonl", "pq": "parquet"}.get(fmt, fmt)
    if fmt not in ("csv", "json", "jsonl", "parquet"):
        raise ScoringError(f"{path}: unknown format {fmt!r}; expected csv, json, jsonl or parquet.")
    return fmt


def read_chunks(path: Path, fmt: str, rows: int = CHUNK_ROWS) -> Iterator[Table]:
    """The input file in batches of at most ``rows`` rows, never all of it in memory."""
    if fmt == "csv":
        yield from _csv_chunks(path, rows)
    elif fmt == "parquet":
        yield from _parquet_chunks(path, rows)
    elif fmt == "jsonl":
        with open(path, encoding="utf-8") as fh:
            batch: list[Any] = []
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        batch.append(json.loads(line))
                    except ValueError as exc:
                        raise ScoringError(f"{path}, line {number}: not JSON: {exc}") from None
                if len(batch) >= rows:
                    yield _records(batch, "records")
                    batch = []
            if batch:
                yield _records(batch, "records")
    else:
        yield from _json_chunks(path, rows)


def _csv_chunks(path: Path, rows: int) -> Iterator[Table]:
    pandas = _optional("pandas")
    if pandas is not None:
        with pandas.read_csv(path, chunksize=rows) as reader:
            for frame in reader:
                yield Table(frame=frame)
        return
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        batch: list[Any] = []
        for row in reader:
            if row:
                batch.append(row)
            if len(batch) >= rows:
                yield Table(columns=header, rows=batch, text=True)
                batch = []
        if batch:
            yield Table(columns=header, rows=batch, text=True)


def _parquet_chunks(path: Path, rows: int) -> Iterator[Table]:
    pq = _optional("pyarrow.parquet")
    if pq is None:
        raise ScoringError(
            f"{path}: reading Parquet needs pyarrow in the model's environment (add it to the "
            "model's requirements, or convert the file to CSV)."
        )
    pandas = _optional("pandas")
    for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
        if pandas is not None:
            yield Table(frame=batch.to_pandas())
        else:
            columns = [str(n) for n in batch.schema.names]
            yield _records(batch.to_pylist(), "parquet") if columns else Table(rows=[])


def _json_chunks(path: Path, rows: int) -> Iterator[Table]:
    """A JSON file: a list of records, streamed; or one request document (its field read)."""
    with open(path, encoding="utf-8") as fh:
        head = fh.read(1)
        while head and head.isspace():
            head = fh.read(1)
        if head == "{":
            fh.seek(0)
            table, _params = parse_json_request(fh.read())
            yield table
            return
        if head != "[":
            raise ScoringError(
                f"{path}: expected a JSON list of records or an object with one of {FORMATS}."
            )
        decoder = json.JSONDecoder()
        buffer, batch, done = "", [], False
        while not done:
            data = fh.read(1 << 16)
            buffer += data
            position = 0
            while True:
                while position < len(buffer) and buffer[position] in " \t\r\n,":
                    position += 1
                if position < len(buffer) and buffer[position] == "]":
                    done = True
                    break
                try:
                    record, position = decoder.raw_decode(buffer, position)
                except ValueError:
                    if not data:
                        raise ScoringError(
                            f"{path}: malformed JSON near {buffer[position : position + 60]!r}"
                        ) from None
                    break
                batch.append(record)
                if len(batch) >= rows:
                    yield _records(batch, "records")
                    batch = []
            buffer = buffer[position:]
            if not data:
                done = True
        if batch:
            yield _records(batch, "records")


class _Writer:
    def __init__(self, out: IO[str], fmt: str) -> None:
        self.out, self.fmt, self.count = out, fmt, 0
        self.csv: Any = None
        self.fields: list[str] | None = None
        if fmt == "json":
            out.write('{"predictions": [')

    def write(self, predictions: list[Any]) -> None:
        for value in predictions:
            if self.fmt == "json":
                self.out.write(
                    (",\n" if self.count else "\n") + json.dumps(value, default=_default)
                )
            elif self.fmt == "jsonl":
                self.out.write(json.dumps(value, default=_default) + "\n")
            else:
                self._csv_row(value)
            self.count += 1

    def _csv_row(self, value: Any) -> None:
        if self.csv is None:
            self.csv = csv.writer(self.out)
            if isinstance(value, dict):
                self.fields = [str(k) for k in value]
            elif isinstance(value, list):
                self.fields = [f"prediction_{i}" for i in range(len(value))]
            else:
                self.fields = ["prediction"]
            self.csv.writerow(self.fields)
        if isinstance(value, dict):
            self.csv.writerow([_csv_value(value.get(k)) for k in self.fields or []])
        elif isinstance(value, list):
            self.csv.writerow([_csv_value(v) for v in value])
        else:
            self.csv.writerow([_csv_value(value)])

    def close(self) -> None:
        if self.fmt == "json":
            self.out.write("\n]}\n")


def _csv_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return "" if value is None else value


def predict_file(
    model: Model,
    source: Path,
    target: Path | None,
    *,
    input_format: str | None = None,
    output_format: str | None = None,
    rows: int = CHUNK_ROWS,
) -> int:
    """Score ``source`` into ``target`` (stdout when None) batch by batch; returns the rows."""
    fmt_in = file_format(source, input_format)
    fmt_out = (output_format or (target.suffix.lstrip(".") if target else "json")).lower()
    if fmt_out not in ("csv", "json", "jsonl"):
        raise ScoringError(f"Output format {fmt_out!r}: expected csv, json or jsonl.")
    out: IO[str]
    if target is None:
        out = sys.stdout
    else:
        out = open(target.with_name(target.name + ".partial"), "w", newline="", encoding="utf-8")  # noqa: SIM115
    writer = _Writer(out, fmt_out)
    try:
        for table in read_chunks(source, fmt_in, rows):
            if not len(table):
                continue
            predictions = jsonable(model.predict(table))
            if not isinstance(predictions, list):
                predictions = [predictions]
            writer.write(predictions)
        writer.close()
    finally:
        if target is not None:
            out.close()
    if target is not None:  # the finished file appears whole, or not at all
        target.with_name(target.name + ".partial").replace(target)
    return writer.count


# -- the command line inside the model's environment --------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reprorun.clients.scoring")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve")
    serve_cmd.add_argument("--model-dir", required=True, type=Path)
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=5000)
    serve_cmd.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY)
    predict_cmd = sub.add_parser("predict")
    predict_cmd.add_argument("--model-dir", required=True, type=Path)
    predict_cmd.add_argument("--input", required=True, type=Path)
    predict_cmd.add_argument("--output", type=Path)
    predict_cmd.add_argument("--input-format")
    predict_cmd.add_argument("--output-format")
    predict_cmd.add_argument("--rows", type=int, default=CHUNK_ROWS)
    args = parser.parse_args(argv)
    try:
        model = Model(args.model_dir)
        if args.command == "serve":

            def announce(host: str, port: int) -> None:
                print(f"{READY} {host} {port}", flush=True)

            serve(model, args.host, args.port, args.max_body, announce)
            return 0
        count = predict_file(
            model,
            args.input,
            args.output,
            input_format=args.input_format,
            output_format=args.output_format,
            rows=args.rows,
        )
        print(f"{READY} {count} rows", file=sys.stderr, flush=True)
        return 0
    except (ModelLoadError, ScoringError, OSError) as exc:
        print(f"Error: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    threading.current_thread().name = "reprorun-scoring"
    sys.exit(main())
