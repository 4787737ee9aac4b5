"""Helpers for the MCP tests: the SDK's own client over a real stdio subprocess or a real
HTTP server, and the probes that skip a test where the host cannot run it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from server_helpers import require_backend

T = TypeVar("T")

TOOLS = {
    "run_python",
    "run_command",
    "write_file",
    "read_file",
    "list_files",
    "get_receipt",
    "session_summary",
    "reset_session",
}


def need_sandbox() -> None:
    require_backend("sandbox", "glasshouse.backends.sandbox")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run an async test body (the tests stay plain functions: no async plugin needed)."""
    return anyio.run(fn)


def stdio_params(receipts: Path, *args: str) -> Any:
    from mcp import StdioServerParameters

    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "glasshouse.cli", "mcp", "--receipts-dir", str(receipts), *args],
        env=dict(os.environ),  # PYTHONPATH: this checkout's sources
    )


@contextlib.asynccontextmanager
async def stdio_client(receipts: Path, *args: str, mode: str = "auto") -> AsyncIterator[Any]:
    from mcp import Client

    async with Client(stdio_params(receipts, *args), mode=mode) as client:
        yield client


@contextlib.asynccontextmanager
async def http_client(url: str, token: str | None = None, mode: str = "auto") -> AsyncIterator[Any]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=120)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


async def call(client: Any, tool: str, **arguments: Any) -> Any:
    """Call a tool; the result (``is_error`` may be set)."""
    return await client.call_tool(tool, arguments)


async def ok(client: Any, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structuredContent."""
    result = await call(client, tool, **arguments)
    assert not result.is_error, result.content
    assert result.content and result.content[0].type == "text" and result.content[0].text
    return dict(result.structured_content)


def error_text(result: Any) -> str:
    assert result.is_error, result
    return "\n".join(block.text for block in result.content)


def require_observed(effects: dict[str, Any]) -> None:
    if not effects["observed"]:
        pytest.skip(f"runs are not observed on this host: {effects['note']}")
