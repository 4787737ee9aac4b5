"""What an MCP server's Glasshouse sessions are made of: :class:`McpOptions`.

``glasshouse mcp`` builds one from its flags; ``glasshouse-server`` from its own
configuration (the same backend, limits, ceilings and receipt pipeline as ``POST /run``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where ``glasshouse mcp`` stores receipts without ``--receipts-dir``.
DEFAULT_RECEIPTS_DIR = (
    Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    / "glasshouse"
    / "receipts"
)


@dataclass(frozen=True)
class McpOptions:
    """One MCP server's settings; every client connection gets a session made from them."""

    backend: str = "sandbox"
    profile: str = "host"
    network: bool = False
    memory_bytes: int | None = 512 << 20
    pids: int | None = 256
    disk_bytes: int | None = 1 << 30
    #: A run's timeout when the model gives none, and the most it may ask for (seconds).
    timeout_s: float = 30.0
    max_timeout_s: float = 300.0
    #: Most bytes read_file returns (the rest is cut, and the result says so).
    read_cap: int = 1 << 20
    #: Most characters of stdout and of stderr a run result carries (its receipt's digests
    #: cover the full streams).
    output_cap: int = 100_000
    #: Base environment of every step.
    env: dict[str, str] = field(default_factory=dict)
    #: Sessions open at once (one per client connection); past it a new client's tools fail.
    max_sessions: int = 16
    backend_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= self.max_timeout_s:
            raise ValueError(
                f"the default timeout ({self.timeout_s:g}s) must be above 0 and at most "
                f"the maximum ({self.max_timeout_s:g}s)"
            )
        for name in ("read_cap", "output_cap", "max_sessions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
