"""``glasshouse mcp``: the MCP server over stdio, for an agent's local config.

One process serves one MCP client and holds one Glasshouse session for it (opened at
start, so a bad option fails here and the first run finds its sandbox ready; sealed when
the client goes). The options are the server's: backend, network, limits, timeouts, policy,
signing key, redaction, receipts directory. Logs go to stderr; stdout is the protocol's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from glasshouse.cli._convert import parse_env
from glasshouse.cli._util import fail
from glasshouse.cli.params import SIZE

_BACKENDS = ("sandbox", "microvm", "gvisor", "firecracker", "qemu", "auto", "process")


@click.command("mcp")
@click.option(
    "--backend",
    "-b",
    type=click.Choice(_BACKENDS),
    default="sandbox",
    show_default=True,
    help="Where the session runs (process: no isolation, needs --allow-unsandboxed).",
)
@click.option(
    "--profile",
    "-p",
    type=click.Choice(["host", "disabled"]),
    default="host",
    show_default=True,
    help="Observe runs with the host eBPF observer (fail-open) or not at all.",
)
@click.option("--network/--no-network", default=False, show_default=True)
@click.option("--memory", type=SIZE, default="512M", show_default=True, help="Per session.")
@click.option("--pids", type=click.IntRange(1), default=256, show_default=True)
@click.option("--disk", type=SIZE, default="1G", show_default=True, help="Workspace quota.")
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    help="A run's timeout (seconds) when the model gives none.",
)
@click.option(
    "--max-timeout",
    type=click.FloatRange(0, min_open=True),
    default=300.0,
    show_default=True,
    help="The longest timeout a model may ask for (seconds).",
)
@click.option("--read-cap", type=SIZE, default="1M", show_default=True, help="read_file's cap.")
@click.option(
    "--output-cap",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Characters of stdout/stderr in a run result.",
)
@click.option("--env", "env", multiple=True, metavar="K=V", help="Environment of every step.")
@click.option(
    "--receipts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The receipt log (default: $XDG_DATA_HOME/glasshouse/receipts, i.e. "
    "~/.local/share/glasshouse/receipts).",
)
@click.option(
    "--policy",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML policy evaluated over every receipt (the model sees its findings).",
)
@click.option(
    "--signing-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ed25519 private key (glasshouse keys generate): sign every receipt.",
)
@click.option("--redact", is_flag=True, help="Replace secrets in receipts.")
@click.option("--allow-unsandboxed", is_flag=True, help="Permit --backend process.")
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="warning",
    show_default=True,
)
def mcp(**opts: Any) -> None:
    """Serve Glasshouse's tools to one MCP client over stdio (run_python, run_command,
    write_file, read_file, list_files, get_receipt, session_summary, reset_session)."""
    logging.basicConfig(level=opts["log_level"].upper(), format="glasshouse mcp: %(message)s")
    if opts["backend"] == "process" and not opts["allow_unsandboxed"]:
        raise click.UsageError(
            "--backend process runs the model's code unsandboxed, as you: "
            "add --allow-unsandboxed to accept that"
        )
    try:
        from glasshouse.mcp import McpOptions, open_hub, serve_stdio
        from glasshouse.mcp.options import DEFAULT_RECEIPTS_DIR
    except ImportError as exc:
        fail(f"the MCP server needs the 'mcp' package (pip install 'glasshouse[mcp]'): {exc}", 2)
    try:
        options = McpOptions(
            backend=opts["backend"],
            profile=opts["profile"],
            network=opts["network"],
            memory_bytes=opts["memory"],
            pids=opts["pids"],
            disk_bytes=opts["disk"],
            timeout_s=opts["timeout"],
            max_timeout_s=opts["max_timeout"],
            read_cap=opts["read_cap"],
            output_cap=opts["output_cap"],
            env=parse_env(opts["env"]),
            max_sessions=1,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    from glasshouse.core.errors import GlasshouseError

    try:
        hub = open_hub(
            options,
            opts["receipts_dir"] or DEFAULT_RECEIPTS_DIR,
            {
                "redact": opts["redact"],
                "policy": opts["policy"],
                "signing_key": opts["signing_key"],
            },
        )
        serve_stdio(hub, eager=True)
    except (GlasshouseError, OSError) as exc:
        fail(str(exc), 2)
