"""What ``reprorun log`` and ``reprorun param`` do for programs in any language: metric lines
from a pipe written in batches, and a parameter's value found and logged.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from reprorun.errors import UserInputError
from reprorun.tracking.entities import Metric, now_ms
from reprorun.tracking.validation import check_metric

BATCH = 1000  # MLflow's limit of metrics per log_batch
FLUSH_SECONDS = 0.5  # the longest a received line waits before it is written


def parse_number(key: str, text: str) -> float:
    """A metric value: a decimal number, or nan / inf / -inf (as MLflow accepts)."""
    try:
        return float(text)
    except ValueError:
        raise UserInputError(f"Metric {key!r} must be a number, got {text!r}.") from None


def parse_metric_line(line: str, number: int, default_step: int | None) -> Metric | None:
    """``KEY VALUE [STEP [TIMESTAMP]]``; blank lines and ``#`` comments give None."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    if not 2 <= len(fields) <= 4:
        raise UserInputError(
            f"Input line {number}: expected `KEY VALUE [STEP [TIMESTAMP]]`, got {line.strip()!r}."
        )
    key, value = fields[0], parse_number(fields[0], fields[1])
    try:
        step = int(fields[2]) if len(fields) > 2 else (default_step or 0)
        stamp = int(fields[3]) if len(fields) > 3 else now_ms()
    except ValueError:
        raise UserInputError(
            f"Input line {number}: STEP and TIMESTAMP must be integers, got {line.strip()!r}."
        ) from None
    try:
        check_metric(key, value, stamp, step)
    except UserInputError as exc:
        raise UserInputError(f"Input line {number}: {exc}") from None
    return Metric(key, value, stamp, step)


def log_metric_lines(stream: IO[bytes], default_step: int | None = None) -> int:
    """Log every metric line of ``stream`` to the attached run, in batches of up to 1,000,
    written at least every half second while lines arrive slowly. Returns the count."""
    from reprorun.tracking import fluent

    run = fluent._run()
    pending: list[Metric] = []
    total = 0
    last_write = time.monotonic()

    def write() -> None:
        nonlocal total, last_write
        if pending:
            run.store.log_batch(run.run_id, metrics=pending)
            total += len(pending)
            pending.clear()
        last_write = time.monotonic()

    lines = _lines(stream, lambda: FLUSH_SECONDS if pending else None, write)
    for number, raw in enumerate(lines, start=1):
        try:
            metric = parse_metric_line(raw.decode("utf-8", errors="replace"), number, default_step)
        except UserInputError:
            write()  # the lines before the bad one are kept
            raise
        if metric is not None:
            pending.append(metric)
        if len(pending) >= BATCH or time.monotonic() - last_write >= FLUSH_SECONDS:
            write()
    write()
    return total


def _lines(
    stream: IO[bytes], timeout: Callable[[], float | None], on_idle: Callable[[], None]
) -> Iterator[bytes]:
    """The lines of ``stream``, read straight from its file descriptor so that waiting for
    more input can time out: after ``timeout()`` seconds without input, ``on_idle()`` runs
    (lines that trickle in are written, not held back behind a buffer)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests): plain lines
        yield from iter(stream.readline, b"")
        return
    buffer = b""
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line + b"\n"
        wait = timeout()
        if wait is not None and not _readable(fd, wait):
            on_idle()
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
    if buffer:
        yield buffer


def _readable(fd: int, timeout: float) -> bool:
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    except (OSError, ValueError):  # not selectable: just read
        return True
    return bool(ready)


def resolve_param(
    name: str,
    default: str | None,
    type_name: str,
    args: list[str],
    run_id: str | None,
    tracking_uri: str | None,
) -> tuple[str, bool]:
    """Parameter ``name``'s text: as the run has it (``-P`` of ``reprorun run``), else from
    the program's ``args``, else ``default``; checked against ``type_name`` and logged.
    Returns (value, whether it is on a run)."""
    from reprorun.tracking import fluent, run_context

    run_id = run_id or run_context.run_id()
    run = fluent.attach(run_id, tracking_uri) if run_id else None
    if run is not None:
        logged = run.store.get_run(run.run_id).data.params.get(name)
        if logged is not None:
            return logged, True
    value = fluent._from_argv(name, args)
    if value is None:
        value = default
    if value is None:
        raise UserInputError(
            f"Parameter {name!r} has no value: pass `-P {name}=VALUE` or give --default."
        )
    check_type(name, value, type_name)
    if run is not None:
        fluent.log_param(name, value)
    return value, run is not None


def check_type(name: str, value: str, type_name: str) -> None:
    from reprorun.params import CastError, ParamType, cast_value

    if type_name == "bool":
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise UserInputError(f"Parameter {name!r}: expected true or false, got {value!r}.")
        return
    ptype = {"float": ParamType.FLOAT, "int": ParamType.INT}.get(type_name)
    if ptype is None:
        return  # string, path, uri: any text
    try:
        cast_value(ptype, value, base_dir=Path.cwd())
    except CastError as exc:
        raise UserInputError(
            f"Parameter {name!r}: expected {exc.expected}, got {value!r}."
        ) from None
