"""``/mcp`` in ``glasshouse-server``: the MCP tools over streamable HTTP.

The sessions are made from the server's own configuration (backend, profile, default
limits, timeout ceiling, request body limit) and their receipts go through the server's
pipeline into its receipt log and index, so ``GET /receipts/{id}`` serves them like any
other. The route sits behind the server's bearer-token check like every data route; a
server without a token (loopback only) also refuses requests whose ``Host`` is not a
loopback name, so a web page cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings

from glasshouse.mcp.options import McpOptions
from glasshouse.mcp.server import build_server
from glasshouse.mcp.sessions import Hub
from glasshouse.receipt.pipeline import FinishedReceipt, ReceiptPipeline

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from glasshouse.server._runner import Runner

PATH = "/mcp"
_LOOPBACK = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)


def options_for(runner: Runner) -> McpOptions:
    """The server's configuration as MCP session options."""
    config = runner.config
    return McpOptions(
        backend=runner.backend_name,
        profile=config.profile,
        network=False,
        memory_bytes=config.memory_bytes,
        pids=config.pids,
        disk_bytes=config.disk_bytes if runner.sandboxed else None,
        timeout_s=min(60.0, config.max_timeout_s),
        max_timeout_s=config.max_timeout_s,
        output_cap=config.output_limit,
        backend_options=dict(config.backend_options),
    )


def mount(
    app: Starlette, runner: Runner
) -> Callable[[], contextlib.AbstractAsyncContextManager[None]]:
    """Serve the MCP tools at ``/mcp`` on ``app``; return the context manager the app's
    lifespan must hold open while it serves (the MCP connections live in it; leaving it
    seals every client's session)."""
    hub = Hub(options_for(runner), _IndexedPipeline(runner), runner.log, runner.engine.observers)
    server = build_server(hub, per_connection=True)
    server.streamable_http_app(
        streamable_http_path=PATH,
        max_request_body_size=runner.config.body_limit,
        transport_security=None if runner.config.tokens else _LOOPBACK,
    )
    manager = server.session_manager
    app.router.add_route(PATH, StreamableHTTPASGIApp(manager), include_in_schema=False)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        import anyio.to_thread

        try:
            async with manager.run():
                yield
        finally:  # (each connection's teardown has sealed its session; this is the backstop)
            await anyio.to_thread.run_sync(hub.close_all, "server shutdown")

    return running


class _IndexedPipeline(ReceiptPipeline):
    """The server's pipeline (its hooks, its log), and each stored receipt indexed."""

    def __init__(self, runner: Runner) -> None:
        super().__init__(runner.library.pipeline.hooks, log=runner.log)
        self._runner = runner

    def finish(self, data: dict[str, Any], **kwargs: Any) -> FinishedReceipt:
        finished = super().finish(data, **kwargs)
        try:
            self._runner.index.add(finished.data)
        except Exception:  # a cache of the files, reconciled at the next start
            import logging

            logging.getLogger("glasshouse.server").warning(
                "receipt %s stored, not indexed yet", finished.execution_id
            )
        return finished
