"""The ``glasshouse`` command line: a thin layer over the library.

Subcommands load lazily (``_COMMANDS``), so ``glasshouse run`` imports only what a run
needs. A part of Glasshouse adds a command by adding one ``name -> "module:attr"`` line.
"""

from __future__ import annotations

import gc
import importlib
import sys

import click

from glasshouse.core.version import __version__

_COMMANDS: dict[str, str] = {
    "run": "glasshouse.cli._run:run",
    "receipt": "glasshouse.cli._receipt:receipt",
    "schema": "glasshouse.cli._receipt:schema",
    "doctor": "glasshouse.cli._doctor:doctor",
    "keys": "glasshouse.cli._trust:keys",
    "verify": "glasshouse.cli._trust:verify",
    "verify-log": "glasshouse.cli._trust:verify_log",
    "policy": "glasshouse.cli._trust:policy",
    "training": "glasshouse.cli._trust:training",
    "remote": "glasshouse.cli._remote:remote",
    "mcp": "glasshouse.cli._mcp:mcp",
    "session": "glasshouse.cli._session:session",
}


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


#: True when running as the ``glasshouse`` process (``main``), not embedded in another one.
STANDALONE = False


def main(argv: list[str] | None = None) -> None:
    global STANDALONE
    STANDALONE = True
    gc.disable()  # a short-lived CLI: no collections during the imports of a run
    cli.main(args=argv, prog_name="glasshouse", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
