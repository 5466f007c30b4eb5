"""A model folder loaded for scoring: reprorun's pickles, MLflow's ``python_function`` models (by
MLflow itself when the environment has it, else their sklearn flavor) and R crates (``RCrate``)."""

from __future__ import annotations

import json
import pickle
import threading
import warnings
from pathlib import Path
from typing import Any

from reprorun.clients.scoring.protocol import (
    CONTENT_TYPE_PARQUET,
    CONTENT_TYPES,
    NUMERIC_TYPES,
    ModelLoadError,
    ScoringError,
    Table,
    cell,
    dumps,
    json_default,
    jsonable,
    optional,
    parse_content_type,
    parse_json_request,
    read_csv_text,
    read_parquet_bytes,
)


def read_mlmodel(directory: Path) -> dict[str, Any]:
    """The MLmodel file: JSON (reprorun's) or YAML (MLflow's; needs PyYAML, which mlflow has)."""
    path = directory / "MLmodel"
    if not path.is_file():
        raise ModelLoadError(f"No MLmodel file in {directory}: not a model folder.")
    text = path.read_text(encoding="utf-8")
    try:
        loaded = json.loads(text)
    except ValueError:
        yaml = optional("yaml")
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
        elif "python_function" in flavors and optional("mlflow") is not None:
            self.pyfunc = optional("mlflow.pyfunc").load_model(str(directory))
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
        skops_io = optional("skops.io")
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

    def close(self) -> None:
        """Release what the model holds (an R model's Rscript process)."""
        if isinstance(self.obj, RCrate):
            self.obj.close()

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
        pandas = optional("pandas")
        if table.frame is not None:
            frame = table.frame
            if self.columns is not None and self.pyfunc is None:
                self._check_columns([str(c) for c in frame.columns])
                frame = frame[self.columns]
            return frame
        if table.rows is None:  # a tensor
            numpy = optional("numpy")
            return numpy.asarray(table.tensor) if numpy is not None else table.tensor
        crate = isinstance(self.obj, RCrate)
        if table.text:
            numbers = None if crate else self._numeric_text(table)
            if numbers is not None:
                return numbers
            table = Table(table.columns, [[cell(v) for v in row] for row in table.rows])
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
        numpy = optional("numpy")
        if numpy is not None:
            return numpy.asarray(rows, dtype=float if self._numeric(columns) else None)
        return rows

    def _numeric_text(self, table: Table) -> Any:
        """CSV rows as a float array read by numpy (fast), when every column is numeric."""
        numpy = optional("numpy")
        if numpy is None or optional("pandas") is not None or table.columns is None:
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
        mime, charset = parse_content_type(content_type)
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
        if mime == CONTENT_TYPE_PARQUET:
            predictions = self.predict(read_parquet_bytes(body))
            return 200, dumps({"predictions": jsonable(predictions)}), "application/json"
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
        numpy = optional("numpy")
        try:
            table, params = parse_json_request(body.decode("utf-8"))
            if params is not None or table.columns is None or table.rows is None or numpy is None:
                return None
            assert self.columns is not None
            if sorted(table.columns) != sorted(self.columns):
                return None
            index = [table.columns.index(c) for c in self.columns]
            rows = [[row[i] for i in index] for row in table.rows]
            # ints for integer columns; ints or floats (MLflow casts them) for the others
            allowed = [
                (int,) if self.types.get(c) in ("long", "integer") else (int, float)
                for c in self.columns
            ]
            if not rows or any(
                len(row) != len(allowed)
                or any(type(v) not in ok or v != v for v, ok in zip(row, allowed, strict=False))
                for row in rows
            ):
                return None  # v != v: NaN
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                predictions = self.fast.predict(numpy.asarray(rows, dtype=float))
        except Exception:
            return None
        return 200, dumps({"predictions": jsonable(predictions)}), "application/json"

    def _mlflow_invocations(self, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        mlflow_exception = optional("mlflow.exceptions").MlflowException
        scoring_server = optional("mlflow.pyfunc.scoring_server")

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
        script = Path(__file__).parent.parent / "scoring.R"
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
        payload = json.dumps(records, default=json_default).encode()
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
        """Stop the R process (it also stops by itself when this process's end closes its
        input)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _records_of(data: Any) -> Any:
    """A model input as JSON for R: a data frame as records, an array as nested lists."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        return data.to_dict(orient="records")
    if hasattr(data, "tolist"):
        return data.tolist()
    return data
