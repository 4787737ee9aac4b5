"""The Glasshouse MCP server: :func:`build_server` and the stdio transport (:func:`serve_stdio`).

One MCP client is one Glasshouse session. Over stdio the client is the process's peer, so
the process has one client (its session opens at the first tool call and is sealed when the
client goes: stdin closed, SIGTERM or SIGINT). Over streamable HTTP a client is an MCP
connection (``Mcp-Session-Id``, the initialize handshake's session): its Glasshouse session
is sealed when the connection ends (DELETE, idle expiry, server shutdown). The 2026-07-28
protocol has no connections; a sandbox that keeps state across calls needs one, so over
HTTP that era's requests are refused with a message that says so, and clients that
negotiate fall back to the handshake (the SDKs' default).
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from glasshouse.core.version import __version__
from glasshouse.mcp import _stdio, tools
from glasshouse.mcp.options import McpOptions
from glasshouse.mcp.sessions import Client, Hub

INSTRUCTIONS = """\
Glasshouse runs your code in an isolated sandbox session that lasts as long as this
connection: files you write and Python variables persist between calls. Every run returns
its observed effects (files written and deleted, network attempts, processes started,
policy findings) as the operating system saw them, and a receipt_id for the full,
tamper-evident receipt. Read the effects: they show what the code really did."""

#: Where a connection keeps its client (``Connection.state``).
_STATE_KEY = "glasshouse.client"


def build_server(hub: Hub, *, per_connection: bool, client: Client | None = None) -> MCPServer:
    """The MCP server over ``hub``'s sessions: one client for the whole process (stdio:
    ``client``, or a new one), or one per MCP connection (``per_connection``, HTTP)."""
    middleware = [_handshake_era_only] if per_connection else []
    server = MCPServer(
        "glasshouse",
        title="Glasshouse",
        version=__version__,
        instructions=INSTRUCTIONS,
        middleware=middleware,
        log_level="WARNING",
    )
    resolve = _per_connection(hub) if per_connection else _single(client or hub.client())
    tools.register(server, hub, resolve)
    return server


def _single(client: Client) -> Callable[[Context], Awaitable[Client]]:
    async def resolve(ctx: Context) -> Client:
        return client

    return resolve


def _per_connection(hub: Hub) -> Callable[[Context], Awaitable[Client]]:
    async def resolve(ctx: Context) -> Client:
        connection = _connection_of(ctx)
        client = connection.state.get(_STATE_KEY)
        if client is None:  # (no await since the get: a connection gets exactly one)
            client = hub.client()
            connection.state[_STATE_KEY] = client
            connection.exit_stack.push_async_callback(anyio.to_thread.run_sync, client.close)
        return client

    return resolve


def _connection_of(ctx: Context) -> Any:
    """The request's ``mcp.server.connection.Connection``: per-connection ``state`` and the
    ``exit_stack`` the SDK unwinds when the connection ends. mcp 2.3 hands handlers the
    request's ``ServerSession``, which holds it, and does not expose it otherwise."""
    return ctx.request_context.session._connection


async def _handshake_era_only(ctx: Any, call_next: Any) -> Any:
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        raise MCPError(
            code=INVALID_REQUEST,
            message=(
                f"protocol {ctx.protocol_version} has no connections, and a Glasshouse "
                "session (a sandbox that keeps files and variables between calls) lives "
                "as long as one: connect with the initialize handshake (2025-11-25 or "
                "earlier), or use 'glasshouse mcp' over stdio"
            ),
        )
    return await call_next(ctx)


def open_hub(options: McpOptions, receipts_dir: Path, pipeline_options: dict[str, Any]) -> Hub:
    """A hub storing receipts in ``receipts_dir`` (a hash-linked log, safe to share with
    other processes), through the usual pipeline (``redact``, ``policy``, ``signing_key``)."""
    from glasshouse.mcp._log import SharedReceiptLog
    from glasshouse.runner import pipeline_for

    signing_key = pipeline_options.get("signing_key")
    if signing_key is not None and not hasattr(signing_key, "sign"):
        from glasshouse.receipt.sign import load_private_key

        signing_key = load_private_key(signing_key)
    log = SharedReceiptLog(receipts_dir, signing_key=signing_key)
    pipeline = pipeline_for(
        redact=pipeline_options.get("redact", False),
        policy=pipeline_options.get("policy"),
        signing_key=signing_key,
        log=log,
    )
    return Hub(options, pipeline, log)


def serve_stdio(hub: Hub, *, eager: bool = True) -> None:
    """Serve one client over stdin/stdout until it goes; then seal its session. ``eager``:
    open the session before serving (a backend that cannot work fails here, and the first
    run finds its sandbox ready)."""
    client = hub.client()
    if eager:
        client.session  # noqa: B018 - opens it
    server = build_server(hub, per_connection=False, client=client)

    reason = "the MCP client disconnected"

    def stop(signum: int, frame: Any) -> None:
        nonlocal reason
        reason = f"glasshouse mcp stopped by {signal.Signals(signum).name}"
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        anyio.run(_stdio.run, server)
    except KeyboardInterrupt:
        pass
    finally:
        hub.close_all(reason)
