"""Batch scoring of a file: CSV, JSON (a list of records or a request), JSON lines or Parquet read
in batches of rows, predictions written as they come (CSV, JSON, JSON lines)."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from reprorun.clients.scoring.model import Model
from reprorun.clients.scoring.protocol import (
    FORMATS,
    ScoringError,
    Table,
    json_default,
    jsonable,
    optional,
    parse_json_request,
    records_table,
)

CHUNK_ROWS = 10_000


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
                    yield records_table(batch, "records")
                    batch = []
            if batch:
                yield records_table(batch, "records")
    else:
        yield from _json_chunks(path, rows)


def _csv_chunks(path: Path, rows: int) -> Iterator[Table]:
    pandas = optional("pandas")
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
    pq = optional("pyarrow.parquet")
    if pq is None:
        raise ScoringError(
            f"{path}: reading Parquet needs pyarrow in the model's environment (add it to the "
            "model's requirements, or convert the file to CSV)."
        )
    pandas = optional("pandas")
    for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
        if pandas is not None:
            yield Table(frame=batch.to_pandas())
        else:
            columns = [str(n) for n in batch.schema.names]
            yield records_table(batch.to_pylist(), "parquet") if columns else Table(rows=[])


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
                    yield records_table(batch, "records")
                    batch = []
            buffer = buffer[position:]
            if not data:
                done = True
        if batch:
            yield records_table(batch, "records")


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
                    (",\n" if self.count else "\n") + json.dumps(value, default=json_default)
                )
            elif self.fmt == "jsonl":
                self.out.write(json.dumps(value, default=json_default) + "\n")
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
