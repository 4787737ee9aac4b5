"""The click application: ``glasshouse`` and its subcommands, each loaded on first use from
:data:`glasshouse.cli._COMMANDS`."""

from __future__ import annotations

import gc
import importlib

import click

from glasshouse.cli import _COMMANDS
from glasshouse.core.version import __version__


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in _COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = _COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None  # the part providing it is not in this build


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glasshouse")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run code isolated and record what the OS observed as a verifiable receipt."""
    if ctx.invoked_subcommand != "run":
        gc.enable()  # only a run is short-lived enough to skip cyclic garbage collection
