"""Glasshouse as an MCP server: any agent can run code in a Glasshouse session and see what
the OS saw it do.

One MCP client is one :class:`glasshouse.Session`. The tools (``glasshouse.mcp.tools``) run
Python and commands in it, move files in and out, and return with every run its receipt id
and a summary of its observed effects (``glasshouse.mcp.effects``). ``glasshouse mcp``
serves them over stdio (:func:`serve_stdio`); ``glasshouse-server`` at ``/mcp`` over
streamable HTTP (``glasshouse.mcp.http``). Needs the ``mcp`` package (``glasshouse[mcp]``).
"""

from __future__ import annotations

from glasshouse.mcp.options import McpOptions
from glasshouse.mcp.server import build_server, open_hub, serve_stdio
from glasshouse.mcp.sessions import Client, Hub

__all__ = ["Client", "Hub", "McpOptions", "build_server", "open_hub", "serve_stdio"]
