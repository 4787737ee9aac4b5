"""Small helpers shared by the CLI commands (no click: the run fast path uses them too)."""

from __future__ import annotations

import sys
from typing import NoReturn


def echo(line: str) -> None:
    """One line of Glasshouse's own on stderr."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def fail(message: str, code: int = 125) -> NoReturn:
    """One clear line on stderr and exit with ``code`` (125: Glasshouse's own error)."""
    echo(f"glasshouse: {message}")
    sys.exit(code)
