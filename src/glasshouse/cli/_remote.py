"""``glasshouse remote``: run code on a glasshouse-server (a thin layer over the client)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from glasshouse.cli._util import fail


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise click.BadParameter(str(exc), param_hint="--token-file") from exc
    return os.environ.get("GLASSHOUSE_TOKEN") or None


@click.group()
def remote() -> None:
    """Talk to a glasshouse-server."""


_url = click.option(
    "--url",
    envvar="GLASSHOUSE_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="Server URL (or $GLASSHOUSE_URL).",
)
_token_file = click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the bearer token (or $GLASSHOUSE_TOKEN).",
)


@remote.command("run")
@_url
@_token_file
@click.option("--timeout", "-t", type=float, default=60, show_default=True, help="1..300 s.")
@click.option("--stdin", "stdin_path", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--file",
    "files",
    multiple=True,
    metavar="[NAME=]PATH",
    help="Place a text file in the sandbox workspace (repeatable).",
)
@click.option("--network/--no-network", default=False, show_default=True)
@click.option(
    "--receipt",
    "receipt_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also save the run's receipt here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@click.argument("script", type=click.Path(dir_okay=False, allow_dash=True))
def run_cmd(
    url: str,
    token_file: Path | None,
    timeout: float,
    stdin_path: str | None,
    files: tuple[str, ...],
    network: bool,
    receipt_path: Path | None,
    as_json: bool,
    script: str,
) -> None:
    """Run SCRIPT (a Python file, '-' for stdin) on the server; exit with its exit code.

    \b
    Example:
      glasshouse remote run hello.py --url http://127.0.0.1:8080
    """
    from glasshouse.client import Client, ServerError

    try:
        code = sys.stdin.read() if script == "-" else Path(script).read_text(encoding="utf-8")
        stdin = None
        if stdin_path == "-":
            stdin = sys.stdin.read()
        elif stdin_path:
            stdin = Path(stdin_path).read_text(encoding="utf-8")
        placed: dict[str, str] = {}
        for item in files:
            name, sep, path = item.partition("=")
            if not sep:
                name, path = Path(item).name, item
            placed[name] = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read input: {exc}")
    with Client(url, _token(token_file)) as client:
        try:
            result = client.run(code, timeout=timeout, stdin=stdin, files=placed, network=network)
            if receipt_path is not None:
                receipt = client.receipt(result.receipt_id)
                receipt_path.write_text(receipt.model_dump_json(indent=2) + "\n")
        except ServerError as exc:
            fail(str(exc))
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2))
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        if result.truncated:
            click.echo("glasshouse: output truncated by the server", err=True)
        if result.error:
            click.echo(f"glasshouse: {result.error}", err=True)
        click.echo(
            f"glasshouse: exit {result.exit_code} · {result.duration_ms} ms · "
            f"{result.backend}/{result.isolation} · receipt {result.receipt_id}",
            err=True,
        )
    sys.exit(result.exit_code)


@remote.command("health")
@_url
@_token_file
def health_cmd(url: str, token_file: Path | None) -> None:
    """Print the server's /health."""
    from glasshouse.client import Client, ServerError

    with Client(url, _token(token_file)) as client:
        try:
            click.echo(json.dumps(client.health(), indent=2))
        except ServerError as exc:
            fail(str(exc))


@remote.command("receipt")
@_url
@_token_file
@click.argument("receipt_id")
def receipt_cmd(url: str, token_file: Path | None, receipt_id: str) -> None:
    """Print the stored receipt RECEIPT_ID as JSON."""
    from glasshouse.client import Client, ServerError

    with Client(url, _token(token_file)) as client:
        try:
            click.echo(client.receipt(receipt_id).model_dump_json(indent=2))
        except ServerError as exc:
            fail(str(exc))
