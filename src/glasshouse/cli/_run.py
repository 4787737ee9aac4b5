"""``glasshouse run``: run a command, stream its output live, write its receipt."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from glasshouse.cli import _trust_run
from glasshouse.cli._util import SIZE, fail
from glasshouse.core.execution import DEFAULT_LIST_CAP

_PROFILES = ("disabled", "host", "guest", "combined")


def _parse_env(values: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--env")
        env[key] = value
    return env


def _parse_files(values: tuple[str, ...]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        try:
            files[name] = Path(path).read_bytes()
        except OSError as exc:
            raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="--file") from exc
    return files


def _summary(result: Any, data: dict[str, Any], receipt_path: Path) -> str:
    if result.timed_out:
        status = "timed out"
    elif result.signal is not None:
        status = f"killed by signal {result.signal}"
    elif result.exit_code is not None:
        status = f"exit {result.exit_code}"
    else:
        status = "error"
    obs = data["observation"]
    seen = f"profile {obs['profile']}"
    for report in obs["observers"]:
        if report["available"]:
            seen += f" ({report['name']}: {len(data['process_tree'])} processes, "
            seen += f"{report['events_lost']} events lost)"
        else:
            seen += f" ({report['name']} unavailable: {report['reason']})"
    omitted = obs.get("omitted") or {}
    if omitted:
        seen += f" · lists capped at {obs.get('list_cap')}: " + ", ".join(
            f"{name} left out {n}" for name, n in omitted.items()
        )
    coverage = obs.get("coverage") or {}
    if coverage:
        codes = ", ".join(dict.fromkeys(r["code"] for r in coverage.get("reasons") or []))
        seen += f" · coverage {coverage['status']}" + (f" ({codes})" if codes else "")
    ex = data["execution"]
    return (
        f"glasshouse: {status} · {result.duration_ms} ms · {ex['backend']}/{ex['isolation']}"
        f" · {seen} · {receipt_path}"
    )


def _output_lines(data: dict[str, Any], directory: Path) -> list[str]:
    """One line per requested output: where it was saved, or why not."""
    lines = []
    for entry in data["artifacts"].get("outputs") or []:
        if entry["status"] == "copied":
            where = directory / entry["path"]
            lines.append(f"glasshouse: output {entry['path']} -> {where} ({entry['size']} bytes)")
        else:
            lines.append(f"glasshouse: output {entry['path']} not saved: {entry['reason']}")
    return lines


@click.command(context_settings={"ignore_unknown_options": False})
@click.option(
    "--backend",
    "-b",
    default="process",
    show_default=True,
    help="process | sandbox | gvisor | microvm | firecracker | qemu | fake | auto. auto = "
    "the strongest isolation that serves real work: microvm where guests boot and touching "
    "32 MiB of fresh memory there is not far slower than in the sandbox (far slower: over 10x "
    "and over 1 s, or past a 5 s timeout), else sandbox, else process; measured once, cached "
    "(glasshouse doctor shows the figures).",
)
@click.option(
    "--profile",
    "-p",
    type=click.Choice(_PROFILES),
    default="host",
    show_default=True,
    help="What to observe: nothing, the host kernel (eBPF), the VM guest, or both.",
)
@click.option(
    "--receipt",
    "receipt_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("receipt.json"),
    show_default=True,
    help="Where to write the receipt.",
)
@click.option("--timeout", "-t", type=float, help="Wall-clock limit in seconds (exit 124).")
@click.option("--cpu", "cpu_s", type=float, help="CPU time limit in seconds.")
@click.option("--memory", "memory", type=SIZE, help="Memory limit, e.g. 512M.")
@click.option("--pids", type=int, help="Maximum number of processes.")
@click.option(
    "--output-limit",
    type=SIZE,
    default="16M",
    show_default=True,
    help="Bytes of each output stream kept in memory (the hash covers all).",
)
@click.option("--file-size", type=SIZE, help="Largest file the command may write.")
@click.option(
    "--disk",
    type=SIZE,
    help="Most bytes the workspace may hold, e.g. 1G (sandbox, gvisor; past it: ENOSPC).",
)
@click.option(
    "--network/--no-network",
    default=None,
    help="Allow network (default: on for process, off for isolating backends).",
)
@click.option(
    "--env",
    "-e",
    "env",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set an environment variable (repeatable).",
)
@click.option("--clean-env", is_flag=True, help="Start from an empty environment.")
@click.option("--cwd", type=click.Path(file_okay=False), help="Working directory.")
@click.option(
    "--stdin",
    "stdin_path",
    type=click.Path(allow_dash=True, dir_okay=False),
    help="Feed this file ('-' for this terminal's stdin); default /dev/null.",
)
@click.option(
    "--file",
    "files",
    multiple=True,
    metavar="[NAME=]PATH",
    help="Copy a file into the sandbox workspace (isolating backends).",
)
@click.option(
    "--output",
    "outputs",
    multiple=True,
    metavar="NAME",
    help="Copy a workspace file back after the run, to the same relative path under "
    "--output-dir (isolating backends; repeatable).",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where --output files are saved (symlinks inside are never followed).",
)
@click.option(
    "--max-list",
    "max_list",
    type=click.IntRange(min=1),
    default=DEFAULT_LIST_CAP,
    show_default=True,
    help="Most entries kept per receipt list (processes, files, connections); the receipt "
    "counts what each capped list left out.",
)
@click.option(
    "--redact",
    is_flag=True,
    help="Replace secrets (tokens, keys, passwords) in the receipt by salted digests.",
)
@click.option(
    "--redact-rules",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    callback=_trust_run.load_rules_option,
    help="YAML redaction rules (implies --redact); see docs/trust.md.",
)
@click.option(
    "--policy",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_trust_run.load_policy_option,
    help="Evaluate this YAML policy; the verdict goes into the receipt (exit code unchanged).",
)
@click.option(
    "--sign",
    metavar="KEY",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_trust_run.load_key_option,
    help="Sign the receipt with this Ed25519 private key (writes a DSSE envelope).",
)
@click.option(
    "--envelope",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where --sign writes the envelope (default: beside the receipt, *.dsse.json).",
)
@click.option("--quiet", "-q", is_flag=True, help="Do not echo output or print the summary.")
@click.option("--debug", is_flag=True, help="Show tracebacks for Glasshouse's own errors.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    backend: str,
    profile: str,
    receipt_path: Path,
    timeout: float | None,
    cpu_s: float | None,
    memory: int | None,
    pids: int | None,
    output_limit: int,
    file_size: int | None,
    disk: int | None,
    network: bool | None,
    env: tuple[str, ...],
    clean_env: bool,
    cwd: str | None,
    stdin_path: str | None,
    files: tuple[str, ...],
    outputs: tuple[str, ...],
    output_dir: Path,
    max_list: int,
    redact: bool,
    redact_rules: Any,
    policy: Any,
    sign: Any,
    envelope: Path | None,
    quiet: bool,
    debug: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND, exit with its exit code, and write its receipt.

    Exit codes: the command's own; 128+N when killed by signal N; 124 on timeout; 125 for
    Glasshouse's own errors; 126/127 when the command is not executable / not found.

    \b
    Example:
      glasshouse run --timeout 5 -- python3 -c 'print("hi")'
    """
    try:
        _run(**locals())
    except SystemExit:
        raise
    except click.ClickException:
        raise
    except Exception as exc:
        if debug:
            raise
        fail(f"{type(exc).__name__}: {exc}")


def _run(**opts: Any) -> None:
    from glasshouse.core.errors import GlasshouseError
    from glasshouse.core.execution import ExecutionSpec, Limits
    from glasshouse.runner import Runner, pipeline_for

    env = None
    if opts["env"] or opts["clean_env"]:
        env = {} if opts["clean_env"] else dict(os.environ)
        env.update(_parse_env(opts["env"]))
    stdin = None
    if opts["stdin_path"] == "-":
        stdin = sys.stdin.buffer.read()
    elif opts["stdin_path"]:
        stdin = Path(opts["stdin_path"]).read_bytes()
    spec = ExecutionSpec(
        argv=list(opts["command"]),
        env=env,
        cwd=opts["cwd"],
        stdin=stdin,
        timeout=opts["timeout"],
        limits=Limits(
            cpu_s=opts["cpu_s"],
            memory_bytes=opts["memory"],
            pids=opts["pids"],
            output_bytes=opts["output_limit"],
            file_size_bytes=opts["file_size"],
            disk_bytes=opts["disk"],
        ),
        network=opts["network"],
        files=_parse_files(opts["files"]),
        outputs=tuple(opts["outputs"]),
    )
    # Keys, policies and rules were loaded by their options' callbacks, before anything ran.
    pipeline = pipeline_for(
        redact=opts["redact_rules"] or opts["redact"],
        policy=opts["policy"],
        signing_key=opts["sign"],
    )
    if opts["envelope"] and opts["sign"] is None:
        click.echo("glasshouse: --envelope has no effect without --sign", err=True)
    try:
        runner = Runner(
            opts["backend"], profile=opts["profile"], pipeline=pipeline, list_cap=opts["max_list"]
        )
    except GlasshouseError as exc:
        fail(str(exc))

    quiet = opts["quiet"]
    interrupted: list[int] = []

    def _on_signal(signum: int, _frame: object) -> None:
        interrupted.append(signum)
        runner.kill_all(f"interrupted by {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        done = runner.run_spec(
            spec,
            on_stdout=None if quiet else _writer(sys.stdout),
            on_stderr=None if quiet else _writer(sys.stderr),
            receipt_path=opts["receipt_path"],
            envelope_path=opts["envelope"],
            output_dir=opts["output_dir"],
        )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

    data, result = done.receipt, done.execution
    if spec.outputs:
        for line in _output_lines(data, opts["output_dir"]):
            if not quiet or " not saved: " in line:
                click.echo(line, err=True)
    if not quiet:
        for line in _trust_run.report_lines(data, done.envelope_path):
            click.echo(line, err=True)
        click.echo(_summary(result, data, opts["receipt_path"]), err=True)
    if result.error and not result.timed_out and result.signal is None:
        click.echo(f"glasshouse: {result.error}", err=True)
    runner.close()  # background teardown (a microVM's reaping) ends before we do
    if interrupted:
        _exit_now(128 + interrupted[0])
    _exit_now(done.returncode)


def _exit_now(code: int) -> None:
    """Exit without interpreter teardown when running as the ``glasshouse`` command: the receipt
    is written and fsynced, and tearing down click, typing and friends costs ~20 ms of every
    run. Invoked in-process (click's CliRunner, embedding), it is a plain ``sys.exit``."""
    from glasshouse import cli

    if not cli.STANDALONE:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _writer(stream: Any) -> Any:
    buffer = stream.buffer

    def write(chunk: bytes) -> None:
        buffer.write(chunk)
        buffer.flush()

    return write
