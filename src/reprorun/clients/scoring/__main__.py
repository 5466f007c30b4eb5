"""``python -m reprorun.clients.scoring serve|predict``: the scoring process in a model's
environment."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from reprorun.clients.scoring.batch import CHUNK_ROWS, predict_file
from reprorun.clients.scoring.model import Model
from reprorun.clients.scoring.protocol import (
    READY,
    ModelLoadError,
    ScoringError,
)
from reprorun.clients.scoring.server import DEFAULT_MAX_BODY, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reprorun.clients.scoring")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve")
    serve_cmd.add_argument("--model-dir", required=True, type=Path)
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=5000)
    serve_cmd.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY)
    serve_cmd.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when standard input closes (the parent that holds it has ended)",
    )
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
            if args.exit_with_parent:
                threading.Thread(target=_exit_on_eof, name="parent-watch", daemon=True).start()

            def announce(host: str, port: int) -> None:
                print(f"{READY} {host} {port}", flush=True)

            try:
                serve(model, args.host, args.port, args.max_body, announce)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise ScoringError(f"Cannot listen on {args.host}:{args.port}: {reason}") from None
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


def _exit_on_eof() -> None:
    """End the process once standard input closes: a killed parent leaves no orphan server."""
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
