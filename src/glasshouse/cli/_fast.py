"""The fast path of ``glasshouse run``: read ``[OPTIONS] -- COMMAND...`` with argparse, not
click (importing click costs a run ~25 ms), and run through the same
:func:`~glasshouse.cli._run_exec.execute` as the click command.

Both read the one option table (:data:`~glasshouse.cli._run_options.OPTIONS`) and convert
values with the same functions. The fast path takes only arguments it reads exactly as click
does and leaves everything else to click, which then words the help or the error: no ``--``
before the command, ``--help``, an unknown or abbreviated option, a short option written
``-t=5`` (click reads the ``=`` as part of the value), a value ``--``, a value click would
refuse.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glasshouse.cli._convert import path_accepted
from glasshouse.cli._run_exec import execute
from glasshouse.cli._run_options import FLAG, OPTIONS, PATH, SWITCH, Option, convert
from glasshouse.cli._trust_run import LOADERS


class _LeftToClick(Exception):
    """These arguments take a form the fast path leaves to click."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _LeftToClick(message)  # (argparse would print its own usage and exit)


class _NoHelp(argparse.HelpFormatter):
    """A fixed width: the fast path prints no help, so it need not ask the terminal's (which
    imports shutil, and argparse makes a formatter for every option it adds)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=80)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="glasshouse run", add_help=False, allow_abbrev=False, formatter_class=_NoHelp
    )
    for option in OPTIONS:
        if option.kind == FLAG:
            parser.add_argument(*option.flags, dest=option.dest, action="store_true")
        elif option.kind == SWITCH:
            assert option.off is not None
            parser.add_argument(*option.flags, dest=option.dest, action="store_true")
            parser.add_argument(option.off, dest=option.dest, action="store_false")
            parser.set_defaults(**{option.dest: None})
        elif option.multiple:
            parser.add_argument(*option.flags, dest=option.dest, action="append", default=[])
        else:
            parser.add_argument(*option.flags, dest=option.dest)
    return parser


def parse(args: list[str]) -> dict[str, object] | None:
    """The options of ``glasshouse run ARGS`` as the click command would pass them (plus
    ``command``), or ``None`` when ``ARGS`` take a form left to click."""
    if "--" not in args:
        return None
    split = args.index("--")
    words, command = args[:split], args[split + 1 :]
    if not command or not all(map(_read_alike, words)):
        return None
    try:
        given = vars(_parser().parse_args(words))
        return {**{o.dest: _value(o, given[o.dest]) for o in OPTIONS}, "command": tuple(command)}
    except (_LeftToClick, ValueError):
        return None


def _read_alike(word: str) -> bool:
    """Does argparse read ``word`` as click does? Not ``-t=5`` (click: the value "=5") nor a
    value "--" (``--output=--``, ``-e--``: argparse drops it)."""
    return not (word[:1] == "-" and word[1:2] != "-" and "=" in word) and not word.endswith("--")


def _value(option: Option, text: object) -> object:
    """``text`` (None: not given) converted as click converts it, loaded if it names a
    key, a policy or rules; ``_LeftToClick`` or ``ValueError`` when click would refuse it."""
    if text is None:
        text = option.default
    if option.kind == PATH and text is not None:
        rule = option.path
        assert rule is not None
        if not path_accepted(
            str(text),
            exists=rule.exists,
            file_okay=rule.file_okay,
            dir_okay=rule.dir_okay,
            allow_dash=rule.allow_dash,
        ):
            raise _LeftToClick(f"{option.flags[0]}: click refuses {text!r}")
    value = convert(option, text)
    if option.loader and isinstance(value, Path):
        value = LOADERS[option.loader](value)
    return value


def run(args: list[str]) -> None:
    """Run ``glasshouse run ARGS`` and exit; return (having done nothing) when ``ARGS`` take a
    form left to click."""
    try:
        opts = parse(args)
        if opts is not None:
            execute(opts)
    except (EOFError, KeyboardInterrupt):
        sys.stderr.write("\nAborted!\n")  # as click reports an interrupt
        sys.exit(1)
