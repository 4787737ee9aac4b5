"""The stdio transport, with an answer for every malformed line.

The SDK's stdio transport drops a line that is not a JSON-RPC message without a word; a
client waiting on it would wait forever. Here such a line gets the JSON-RPC error it
calls for (``-32700`` parse error for what is not JSON, ``-32600`` invalid request for JSON
that is not a JSON-RPC message, with its ``id`` when it has a usable one), written whole
between the server's own messages. As in the SDK, while serving, fd 0 reads the null
device and fd 1 goes to stderr, so nothing a handler or child prints can corrupt the wire.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp_types import INVALID_REQUEST, PARSE_ERROR, jsonrpc_message_adapter


def malformed(line: str) -> dict[str, Any] | None:
    """The JSON-RPC error answering ``line``, or None when it is a JSON-RPC message."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        return _error(None, PARSE_ERROR, f"Parse error: {exc}")
    try:
        jsonrpc_message_adapter.validate_python(data, by_name=False)
    except ValueError:
        rid = data.get("id") if isinstance(data, dict) else None
        if isinstance(rid, bool) or not isinstance(rid, str | int):
            rid = None
        what = (
            "a batch: MCP takes one message per line"
            if isinstance(data, list)
            else 'not a JSON-RPC 2.0 message (an object with "jsonrpc": "2.0" and either '
            'a "method" with object "params", or an "id" with a "result" or an "error")'
        )
        return _error(rid, INVALID_REQUEST, f"Invalid Request: {what}")
    return None


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


class _Out:
    """The wire's write side: one whole line at a time, from the server or the filter."""

    def __init__(self, file: Any) -> None:
        self._file = anyio.wrap_file(file)
        self._lock = anyio.Lock()
        self._pending = ""

    async def write(self, text: str) -> None:
        self._pending += text

    async def flush(self) -> None:
        text, self._pending = self._pending, ""
        await self.write_line(text)

    async def write_line(self, text: str) -> None:
        async with self._lock:
            await self._file.write(text if text.endswith("\n") else text + "\n")
            await self._file.flush()


class _In:
    """The wire's read side: passes JSON-RPC messages on, answers the rest itself."""

    def __init__(self, file: Any, out: _Out) -> None:
        self._file = anyio.wrap_file(file)
        self._out = out

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for line in self._file:
            if not line.strip():
                continue
            error = malformed(line)
            if error is None:
                yield line
            else:
                await self._out.write_line(json.dumps(error))


@contextlib.contextmanager
def _wire() -> Iterator[tuple[Any, Any]]:
    """Private copies of fds 0 and 1 for the wire; fd 0 -> /dev/null, fd 1 -> stderr."""
    sys.stdout.flush()
    wire_in, wire_out = os.dup(0), os.dup(1)
    saved_in, saved_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    for fd in (wire_in, wire_out, saved_in, saved_out):
        os.set_inheritable(fd, False)
    try:
        with (
            open(wire_in, encoding="utf-8", errors="replace") as fin,
            open(wire_out, "w", encoding="utf-8") as fout,
        ):
            yield fin, fout
    finally:
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)


async def run(server: MCPServer) -> None:
    """Serve ``server`` over this process's stdin and stdout until stdin closes."""
    lowlevel = server._lowlevel_server  # (MCPServer.run_stdio_async does the same)
    with _wire() as (fin, fout):
        out = _Out(fout)
        async with stdio_server(stdin=_In(fin, out), stdout=out) as (read, write):  # type: ignore[arg-type]
            await lowlevel.run(read, write, lowlevel.create_initialization_options())
