"""Clients for glasshouse-server (httpx).

- :class:`Sandbox` / :class:`AsyncSandbox`: a session that lives across steps
  (``run_code``, ``commands.run``, ``files``, streamed ``on_stdout``/``on_stderr``,
  ``receipt()``, ``verify()``).
- :class:`Client`: one-shot runs (``POST /run``), receipts, health and metrics.

Errors the server reports raise :class:`ServerError` (``status``, ``code``, ``message``).
"""

from glasshouse.client._async import AsyncSandbox
from glasshouse.client._client import Client, ReceiptPage, ReceiptSummary, RunResult
from glasshouse.client._sandbox import Sandbox
from glasshouse.client._wire import FileEntry, ServerError, StepResult

__all__ = [
    "AsyncSandbox",
    "Client",
    "FileEntry",
    "ReceiptPage",
    "ReceiptSummary",
    "RunResult",
    "Sandbox",
    "ServerError",
    "StepResult",
]
