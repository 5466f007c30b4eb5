"""A notification target for tests: a ``cmd:`` script that appends each payload it is given
(backends/notify.py sends it as JSON on stdin) as one line of a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class Heard:
    """``target`` (a ``cmd:`` notification target) and what it was told (``said``)."""

    def __init__(self, folder: Path, name: str = "heard"):
        self.file = folder / name
        script = folder / f"{name}.sh"
        script.write_text(f"#!/bin/sh\ncat >> {self.file}\necho >> {self.file}\n")
        script.chmod(0o755)
        self.target = f"cmd:{script}"

    def said(self) -> list[dict[str, Any]]:
        """Every payload so far, in order (none if the target was never run)."""
        if not self.file.exists():
            return []
        return [json.loads(line) for line in self.file.read_text().splitlines()]

    def events(self) -> list[tuple[str, str]]:
        """(event, run id) of every payload so far."""
        return [(said["event"], said["run_id"]) for said in self.said()]
