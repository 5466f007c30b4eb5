"""Rendering helpers shared by the commands: JSON, times, durations, tables, the progress of an
environment build."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from reprorun.config import setting


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: spell them as strings, like MLflow's REST API."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def echo_json(data: Any) -> None:
    click.echo(json.dumps(_clean(data), indent=2, allow_nan=False))


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(start_ms: int | None, end_ms: int | None) -> str:
    if start_ms is None or end_ms is None:
        return "-"
    seconds = max(0.0, (end_ms - start_ms) / 1000)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_metric(value: float) -> str:
    return f"{value:.6g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on stdout (rich loads only here)."""
    from rich.console import Console
    from rich.table import Table

    out = Table(box=None, header_style="bold", pad_edge=False)
    for header in headers:
        no_wrap = header.endswith("ID") or header == "STARTED"
        out.add_column(header, overflow="fold", no_wrap=no_wrap)
    for row in rows:
        out.add_row(*row)
    console = Console()
    if not console.is_terminal:
        console = Console(width=10_000)  # piped: never wrap, the natural width is the width
    console.print(out)


def key_values(pairs: Sequence[tuple[str, str]], indent: int = 2) -> None:
    if not pairs:
        click.echo(" " * indent + "(none)")
        return
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        click.echo(f"{' ' * indent}{key.ljust(width)}  {value}")


@contextmanager
def progress_display() -> Iterator[Callable[[str], None]]:
    """A spinner with the environment build's current step on a terminal; quiet otherwise,
    unless REPRORUN_PROGRESS=plain asks for plain lines (CI logs)."""
    if not sys.stderr.isatty():
        if setting("progress") != "plain":
            yield lambda _text: None
            return

        def line(text: str) -> None:
            if text:
                click.echo(f"reprorun: {text}", err=True)

        yield line
        return
    from rich.console import Console

    console = Console(stderr=True)
    status = console.status("")
    started = False

    def update(text: str) -> None:
        nonlocal started
        if not text:
            stop()
            return
        status.update(f"reprorun: {text}")
        if not started:
            status.start()
            started = True

    def stop() -> None:
        nonlocal started
        if started:
            status.stop()
            started = False

    try:
        yield update
    finally:
        stop()
