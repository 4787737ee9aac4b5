"""The ``glasshouse`` command line: a thin layer over the library.

Subcommands load lazily (``_COMMANDS``), so a command imports only what it needs; a part of
Glasshouse adds a command by adding one ``name -> "module:attr"`` line. ``glasshouse run
[OPTIONS] -- COMMAND...`` takes a fast path that imports no click (:mod:`._fast`); every other
form, ``--help`` and every error go to the click application (:mod:`._app`).
"""

from __future__ import annotations

import gc
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import click

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

#: True when running as the ``glasshouse`` process (``main``), not embedded in another one.
STANDALONE = False


def main(argv: list[str] | None = None) -> None:
    global STANDALONE
    STANDALONE = True
    gc.disable()  # a short-lived CLI: no collections during the imports of a run
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["run"]:
        from glasshouse.cli._fast import run

        run(args[1:])  # returns only for a form of arguments it leaves to click
    from glasshouse.cli._app import cli

    cli.main(args=args, prog_name="glasshouse", standalone_mode=True)


def __getattr__(name: str) -> click.Group:
    if name == "cli":  # the click application, loaded on first use
        from glasshouse.cli._app import cli

        return cli
    raise AttributeError(f"module 'glasshouse.cli' has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
