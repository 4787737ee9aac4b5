"""What ``glasshouse run`` does once its options are read: run the command, stream its output
live, write its receipt, exit with its code. Both front ends (the click command and the fast
path) call :func:`execute` with the same converted options; nothing here imports click.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from glasshouse.cli._util import echo, fail

if TYPE_CHECKING:
    from pathlib import Path


def execute(opts: dict[str, Any]) -> NoReturn:
    """Run with ``opts`` (option dest -> converted value, ``command`` the argv) and exit.

    Exit codes: the command's own; 128+N for signal N; 124 timeout; 125 for Glasshouse's own
    errors (one line on stderr; ``debug`` raises them instead); 126/127 not runnable."""
    try:
        _run(opts)
    except SystemExit:
        raise
    except Exception as exc:
        if opts["debug"]:
            raise
        fail(f"{type(exc).__name__}: {exc}")


def _run(opts: dict[str, Any]) -> NoReturn:
    from glasshouse.core.errors import GlasshouseError
    from glasshouse.core.execution import ExecutionSpec, Limits
    from glasshouse.runner import Runner, pipeline_for

    env = None
    if opts["env"] or opts["clean_env"]:
        env = {} if opts["clean_env"] else dict(os.environ)
        env.update(opts["env"])
    stdin = None
    if opts["stdin_path"] == "-":
        stdin = sys.stdin.buffer.read()
    elif opts["stdin_path"]:
        with open(opts["stdin_path"], "rb") as fh:
            stdin = fh.read()
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
        files=opts["files"],
        outputs=tuple(opts["outputs"]),
    )
    # Keys, policies and rules were loaded when the options were read, before anything ran.
    pipeline = pipeline_for(
        redact=opts["redact_rules"] or opts["redact"],
        policy=opts["policy"],
        signing_key=opts["sign"],
    )
    if opts["envelope"] and opts["sign"] is None:
        echo("glasshouse: --envelope has no effect without --sign")
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
                echo(line)
    if not quiet:
        from glasshouse.cli._trust_run import report_lines

        for line in report_lines(data, done.envelope_path):
            echo(line)
        echo(_summary(result, data, opts["receipt_path"]))
    if result.error and not result.timed_out and result.signal is None:
        echo(f"glasshouse: {result.error}")
    runner.close()  # background teardown (a microVM's reaping) ends before we do
    if interrupted:
        _exit_now(128 + interrupted[0])
    _exit_now(done.returncode)


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


def _exit_now(code: int) -> NoReturn:
    """Exit without interpreter teardown when running as the ``glasshouse`` command: the receipt
    is written and fsynced, and tearing down the modules of a run costs milliseconds of every
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
