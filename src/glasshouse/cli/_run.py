"""``glasshouse run`` as a click command, built from the one option table
(:data:`glasshouse.cli._run_options.OPTIONS`): its ``--help``, its errors, and every form of
arguments the fast path (:mod:`glasshouse.cli._fast`) leaves to it. Running is
:func:`glasshouse.cli._run_exec.execute`, the same for both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from glasshouse.cli._run_exec import execute
from glasshouse.cli._run_options import (
    CHOICE,
    COUNT,
    ENV,
    FILES,
    FLAG,
    FLOAT,
    INT,
    OPTIONS,
    PATH,
    SIZE,
    SWITCH,
    Option,
    convert,
)
from glasshouse.cli._trust_run import LOADERS
from glasshouse.cli.params import SIZE as SIZE_TYPE

_TYPES: dict[str, Any] = {FLOAT: float, INT: int, COUNT: click.IntRange(min=1), SIZE: SIZE_TYPE}


def _type(option: Option) -> Any:
    if option.kind == CHOICE:
        return click.Choice(option.choices)
    if option.kind == PATH:
        rule = option.path
        assert rule is not None
        return click.Path(
            exists=rule.exists,
            file_okay=rule.file_okay,
            dir_okay=rule.dir_okay,
            allow_dash=rule.allow_dash,
            path_type=Path if rule.as_path else None,
        )
    return _TYPES.get(option.kind)


def _callback(option: Option) -> Callable[..., Any] | None:
    """Converts ENV and FILES values and runs an option's loader: a refusal is a usage error
    worded as the option's (``Invalid value for --env: ...``)."""
    loader = LOADERS[option.loader] if option.loader else None
    if loader is None and option.kind not in (ENV, FILES):
        return None

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            if loader is not None:
                return None if value is None else loader(value)
            return convert(option, value)
        except ValueError as exc:
            hint = None if loader is not None else option.flags[0]
            raise click.BadParameter(str(exc), ctx=ctx, param=param, param_hint=hint) from exc

    return callback


def _click_option(option: Option) -> Callable[[Any], Any]:
    flags = list(option.flags)
    if option.kind == SWITCH:
        flags = [f"{flags[0]}/{option.off}"]
    settings: dict[str, Any] = {"help": option.help}
    if option.kind == FLAG:
        settings["is_flag"] = True
    elif option.kind == SWITCH:
        settings["default"] = None  # neither flag given: the backend's default
    else:
        settings["type"] = _type(option)
    for name in ("default", "metavar", "multiple", "show_default"):
        if getattr(option, name):
            settings[name] = getattr(option, name)
    callback = _callback(option)
    if callback is not None:
        settings["callback"] = callback
    return click.option(*flags, option.dest, **settings)


def _with_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)(fn)
    for option in reversed(OPTIONS):
        fn = _click_option(option)(fn)
    return fn


@click.command(context_settings={"ignore_unknown_options": False})
@_with_options
def run(**opts: Any) -> None:
    """Run COMMAND, exit with its exit code, and write its receipt.

    Exit codes: the command's own; 128+N when killed by signal N; 124 on timeout; 125 for
    Glasshouse's own errors; 126/127 when the command is not executable / not found.

    \b
    Example:
      glasshouse run --timeout 5 -- python3 -c 'print("hi")'
    """
    execute(opts)
