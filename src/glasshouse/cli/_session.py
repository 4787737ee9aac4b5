"""``glasshouse session``: drive a session on a glasshouse-server by hand (over
:class:`glasshouse.client.Sandbox`).

    S=$(glasshouse session create --url http://127.0.0.1:8080)
    glasshouse session run $S --code 'x = 41'
    glasshouse session run $S --code 'print(x + 1)'        # streamed; exits with the code
    glasshouse session put $S data.csv                      # local file -> workspace
    glasshouse session run $S -- wc -l data.csv
    glasshouse session get $S out.txt -                     # workspace file -> stdout
    glasshouse session close $S                             # prints the session receipt id
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from glasshouse.cli._remote import _token, _token_file, _url
from glasshouse.cli._util import fail
from glasshouse.cli.params import SIZE


@click.group()
def session() -> None:
    """Drive a session (a sandbox across steps) on a glasshouse-server."""


@contextlib.contextmanager
def _attached(url: str, token_file: Path | None, sid: str) -> Iterator[Any]:
    """The session ``sid``, left open afterwards; a server error ends the command."""
    from glasshouse.client import Sandbox, ServerError

    sandbox = Sandbox.connect(url, sid, _token(token_file))
    try:
        yield sandbox
    except ServerError as exc:
        fail(str(exc))
    finally:
        sandbox.disconnect()


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=what)
        out[name] = value
    return out


def _read(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
        raise  # (not reached)


@session.command("create")
@_url
@_token_file
@click.option("--network/--no-network", default=False, show_default=True)
@click.option("--memory", type=SIZE, help="The whole session's memory limit.")
@click.option("--pids", type=int, help="Processes the session may have at once.")
@click.option("--disk", type=SIZE, help="The workspace's disk quota.")
@click.option("--ttl", "ttl_s", type=float, help="Seconds the session lives at most.")
@click.option("--idle-timeout", "idle_s", type=float, help="Seconds idle before it is closed.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Repeatable.")
@click.option("--file", "files", multiple=True, metavar="[NAME=]PATH", help="A text file to place.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
def create_cmd(
    url: str,
    token_file: Path | None,
    network: bool,
    memory: int | None,
    pids: int | None,
    disk: int | None,
    ttl_s: float | None,
    idle_s: float | None,
    env: tuple[str, ...],
    files: tuple[str, ...],
    as_json: bool,
) -> None:
    """Open a session; print its id."""
    from glasshouse.client import Sandbox, ServerError

    placed = {}
    for item in files:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        try:
            placed[name] = _read(path).decode("utf-8")
        except UnicodeDecodeError:
            fail(f"{path} is not UTF-8 text: upload binary files with 'session put'")
    try:
        sandbox = Sandbox(
            url,
            _token(token_file),
            network=network,
            memory=memory,
            pids=pids,
            disk=disk,
            ttl_s=ttl_s,
            idle_timeout_s=idle_s,
            env=_pairs(env, "--env"),
            files=placed,
        )
    except ServerError as exc:
        fail(str(exc))
    sandbox.disconnect()
    click.echo(json.dumps(sandbox.created, indent=2) if as_json else sandbox.id)


@session.command("run", context_settings={"ignore_unknown_options": True})
@_url
@_token_file
@click.option("--code", help="Python for the session's interpreter ('-': read stdin).")
@click.option("--code-file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--shell", help="A shell script (sh -c).")
@click.option("--stdin", "stdin_path", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Repeatable.")
@click.option("--cwd", help="Working directory, relative to the workspace.")
@click.option("--timeout", "-t", type=float, help="Seconds (default: the server's, 60).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON, not live.")
@click.argument("session_id")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def run_cmd(
    url: str,
    token_file: Path | None,
    code: str | None,
    code_file: str | None,
    shell: str | None,
    stdin_path: str | None,
    env: tuple[str, ...],
    cwd: str | None,
    timeout: float | None,
    as_json: bool,
    session_id: str,
    argv: tuple[str, ...],
) -> None:
    """Run one step in SESSION_ID: --code, --code-file, --shell, or an argv after '--'.
    Output is streamed; exits with the step's exit code."""
    if code == "-" or code_file is not None:
        code = _read("-" if code == "-" else str(code_file)).decode("utf-8", "replace")
    given = [g for g in (code, shell, argv or None) if g is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --code/--code-file, --shell or an argv")
    stdin = _read(stdin_path).decode("utf-8", "replace") if stdin_path else None
    options: dict[str, Any] = {
        "stdin": stdin,
        "env": _pairs(env, "--env"),
        "cwd": cwd,
        "timeout": timeout,
    }
    if not as_json:
        options["on_stdout"] = _writer(sys.stdout)
        options["on_stderr"] = _writer(sys.stderr)
    with _attached(url, token_file, session_id) as sandbox:
        if code is not None:
            result = sandbox.run_code(code, **options)
        else:
            result = sandbox.commands.run(shell if shell is not None else list(argv), **options)
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2))
    else:
        restarted = " · interpreter restarted" if result.interpreter_restarted else ""
        if result.error:
            click.echo(f"glasshouse: {result.error}", err=True)
        click.echo(
            f"glasshouse: step {result.step} · exit {result.exit_code} · "
            f"{result.duration_ms} ms{restarted} · receipt {result.receipt_id}",
            err=True,
        )
    sys.exit(result.exit_code)


def _writer(stream: Any) -> Any:
    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


@session.command("put")
@_url
@_token_file
@click.argument("session_id")
@click.argument("local", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("remote", required=False)
def put_cmd(
    url: str, token_file: Path | None, session_id: str, local: str, remote: str | None
) -> None:
    """Upload LOCAL ('-': stdin) to REMOTE in the workspace (default: LOCAL's name)."""
    if remote is None:
        if local == "-":
            raise click.UsageError("name the workspace file when reading stdin")
        remote = Path(local).name
    data = _read(local)
    with _attached(url, token_file, session_id) as sandbox:
        entry = sandbox.files.write(remote, data)
    click.echo(f"{entry.path}\t{entry.size}\t{entry.sha256}")


@session.command("get")
@_url
@_token_file
@click.argument("session_id")
@click.argument("remote")
@click.argument("local", required=False)
def get_cmd(
    url: str, token_file: Path | None, session_id: str, remote: str, local: str | None
) -> None:
    """Download REMOTE from the workspace to LOCAL ('-' or omitted: stdout)."""
    with _attached(url, token_file, session_id) as sandbox:
        data = sandbox.files.read(remote)
    if local in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        Path(str(local)).write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {local}: {exc.strerror or exc}")


@session.command("ls")
@_url
@_token_file
@click.argument("session_id")
@click.argument("path", default=".")
def ls_cmd(url: str, token_file: Path | None, session_id: str, path: str) -> None:
    """List a workspace directory: type, size, path."""
    with _attached(url, token_file, session_id) as sandbox:
        entries = sandbox.files.list(path)
    for entry in entries:
        kind = {"directory": "d", "file": "-", "symlink": "l"}.get(entry.type, "?")
        click.echo(f"{kind} {entry.size:>10} {entry.path}")


@session.command("rm")
@_url
@_token_file
@click.argument("session_id")
@click.argument("path")
def rm_cmd(url: str, token_file: Path | None, session_id: str, path: str) -> None:
    """Delete a workspace file."""
    with _attached(url, token_file, session_id) as sandbox:
        sandbox.files.delete(path)


@session.command("info")
@_url
@_token_file
@click.argument("session_id")
def info_cmd(url: str, token_file: Path | None, session_id: str) -> None:
    """Print the session's state, steps, resources and expiry as JSON."""
    with _attached(url, token_file, session_id) as sandbox:
        click.echo(json.dumps(sandbox.info(), indent=2))


@session.command("list")
@_url
@_token_file
def list_cmd(url: str, token_file: Path | None) -> None:
    """List the open sessions: id, state, steps, expiry."""
    from glasshouse.client import Client, ServerError

    with Client(url, _token(token_file)) as client:
        try:
            sessions = client.sessions()
        except ServerError as exc:
            fail(str(exc))
    for item in sessions:
        click.echo(f"{item['id']}\t{item['state']}\t{item['steps']}\t{item['expires_at']}")


@session.command("pause")
@_url
@_token_file
@click.argument("session_id")
def pause_cmd(url: str, token_file: Path | None, session_id: str) -> None:
    """Pause: free CPU and memory, keep the workspace; print what is kept."""
    with _attached(url, token_file, session_id) as sandbox:
        click.echo(sandbox.pause())


@session.command("resume")
@_url
@_token_file
@click.argument("session_id")
def resume_cmd(url: str, token_file: Path | None, session_id: str) -> None:
    """Resume a paused session."""
    with _attached(url, token_file, session_id) as sandbox:
        click.echo(sandbox.resume()["state"])


@session.command("close")
@_url
@_token_file
@click.argument("session_id")
def close_cmd(url: str, token_file: Path | None, session_id: str) -> None:
    """Close the session; print its session receipt's id."""
    from glasshouse.client import Sandbox, ServerError

    sandbox = Sandbox.connect(url, session_id, _token(token_file))
    try:
        receipt_id = sandbox.close()
    except ServerError as exc:
        fail(str(exc))
    if receipt_id is None:
        fail(f"session {session_id} was closed already")
    click.echo(receipt_id)
