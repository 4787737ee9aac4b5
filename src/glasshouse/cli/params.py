"""Command-line parameter types shared by ``glasshouse`` and ``glasshouse-server``."""

from __future__ import annotations

import click

from glasshouse.cli._convert import parse_size as parse_size


class SizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()
