"""Clients for code in other languages, shipped as plain files inside the package."""

from pathlib import Path

R_CLIENT = Path(__file__).parent / "reprorun.R"
