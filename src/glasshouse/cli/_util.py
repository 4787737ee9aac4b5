"""Small helpers shared by the CLI commands."""

from __future__ import annotations

import sys

import click

from glasshouse.cli.params import SIZE as SIZE


def fail(message: str, code: int = 125) -> None:
    """One clear line on stderr and exit with ``code`` (125: Glasshouse's own error)."""
    click.echo(f"glasshouse: {message}", err=True)
    sys.exit(code)
