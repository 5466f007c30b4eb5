"""MLflow's scoring protocol without MLflow: request bodies read into batches (``Table``),
predictions written back as JSON, and the errors with their status codes."""

from __future__ import annotations

import csv
import importlib
import io
import json
from dataclasses import dataclass
from typing import Any

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_TYPE_PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = ("application/json", "text/csv", CONTENT_TYPE_PARQUET)
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


def optional(name: str) -> Any:
    """The module ``name``, or None when this environment does not have it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def parse_content_type(header: str | None) -> tuple[str, str]:
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
        return records_table(value, key)
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
        return records_table(value, key)
    if isinstance(value, list):
        return Table(tensor=value)
    raise ScoringError(
        f"'{key}' must be a list or a mapping of columns, not {type(value).__name__}."
    )


def records_table(records: list[Any], key: str) -> Table:
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


def cell(text: str) -> Any:
    """A CSV value: None when empty, a number when it reads as one, else the text."""
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(text) if text.lstrip("+-").isdigit() else number


def read_parquet_bytes(data: bytes) -> Table:
    """A Parquet request body (MLflow's ``application/vnd.apache.parquet``); needs pyarrow."""
    pq = optional("pyarrow.parquet")
    if pq is None:
        raise ScoringError(
            "Parquet input needs pyarrow in the model's environment; send JSON or CSV."
        )
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:
        raise ScoringError(f"Failed to parse input as Parquet: {exc}") from None
    if optional("pandas") is not None:
        return Table(frame=table.to_pandas())
    return records_table(table.to_pylist(), "parquet")


def read_csv_text(text: str) -> Table:
    pandas = optional("pandas")
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


def json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=json_default).encode()


# -- the server ------------------------------------------------------------------------------
