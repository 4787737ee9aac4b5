"""The stdio transport, with an answer for every malformed line.

The SDK's stdio transport drops a line that is not a JSON-RPC message without a word; a
client waiting on it would wait forever. Here such a line gets the JSON-RPC error it
calls for (``-32700`` parse error for what is not JSON, ``-32600`` invalid request for JSON
that is not a JSON-RPC message, with its ``id`` when it has a usable one), written whole
between the server's own messages. As in the SDK, while serving, fd 0 reads the null
device and fd 1 goes to stderr, so nothing a handler or child prints can corrupt the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.to_thread
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


#: The longest message line read (a write_file of a large file is one line).
MAX_LINE = 64 << 20


class _Out:
    """The wire's write side: one whole line at a time, from the server or the filter.
    Writes go through the event loop (no thread hop per message)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self._lock = anyio.Lock()
        self._pending = ""

    async def write(self, text: str) -> None:
        self._pending += text

    async def flush(self) -> None:
        text, self._pending = self._pending, ""
        await self.write_line(text)

    async def write_line(self, text: str) -> None:
        line = text if text.endswith("\n") else text + "\n"
        async with self._lock:
            self._writer.write(line.encode("utf-8"))
            await self._writer.drain()


class _In:
    """The wire's read side: passes JSON-RPC messages on, answers the rest itself."""

    def __init__(self, reader: asyncio.StreamReader, out: _Out) -> None:
        self._reader = reader
        self._out = out

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        while True:
            try:
                raw = await self._reader.readline()
            except ValueError:  # a line over MAX_LINE (the reader skipped it)
                error = _error(None, INVALID_REQUEST, f"Invalid Request: over {MAX_LINE} bytes")
                await self._out.write_line(json.dumps(error))
                continue
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            error = malformed(line)
            if error is None:
                yield line
            else:
                await self._out.write_line(json.dumps(error))


@contextlib.contextmanager
def _wire() -> Iterator[tuple[int, int]]:
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
        yield wire_in, wire_out
    finally:
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)


async def _streams(fd_in: int, fd_out: int) -> tuple[asyncio.StreamReader, Any]:
    """Event-loop streams over the wire: pipes (what MCP clients give) are read and written
    without a thread; anything else (a file on stdin) through a thread per call."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    fin = open(fd_in, "rb", buffering=0)  # noqa: SIM115 - owned by the transports below
    fout = open(fd_out, "wb", buffering=0)  # noqa: SIM115
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), fin)
    except ValueError:  # not a pipe, socket or character device
        _feed_from_thread(reader, fin)
    try:
        transport, protocol = await loop.connect_write_pipe(_Flow, fout)
        writer: Any = _PipeWriter(transport, protocol)
    except ValueError:
        writer = _ThreadWriter(fout)
    return reader, writer


class _Flow(asyncio.Protocol):
    """The write pipe's flow control: ``ready`` is clear while the pipe is full."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()

    def pause_writing(self) -> None:
        self.ready.clear()

    def resume_writing(self) -> None:
        self.ready.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ready.set()  # (the client is gone: nothing more will be written)


class _PipeWriter:
    def __init__(self, transport: asyncio.WriteTransport, flow: _Flow) -> None:
        self._transport, self._flow = transport, flow

    def write(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        await self._flow.ready.wait()


def _feed_from_thread(reader: asyncio.StreamReader, file: Any) -> None:
    loop = asyncio.get_running_loop()

    def pump() -> None:
        while chunk := file.read(1 << 16):
            loop.call_soon_threadsafe(reader.feed_data, chunk)
        loop.call_soon_threadsafe(reader.feed_eof)

    threading.Thread(target=pump, name="mcp-stdin", daemon=True).start()


class _ThreadWriter:
    def __init__(self, file: Any) -> None:
        self._file = file
        self._pending = b""

    def write(self, data: bytes) -> None:
        self._pending += data

    async def drain(self) -> None:
        data, self._pending = self._pending, b""
        await anyio.to_thread.run_sync(self._file.write, data)


async def run(server: MCPServer) -> None:
    """Serve ``server`` over this process's stdin and stdout until stdin closes."""
    lowlevel = server._lowlevel_server  # (MCPServer.run_stdio_async does the same)
    with _wire() as (fd_in, fd_out):
        reader, writer = await _streams(fd_in, fd_out)
        out = _Out(writer)
        async with stdio_server(stdin=_In(reader, out), stdout=out) as (read, write):  # type: ignore[arg-type]
            await lowlevel.run(read, write, lowlevel.create_initialization_options())
