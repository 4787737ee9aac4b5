"""What a run left in its workspace: the files it wrote that still exist at the end.

A backend with a workspace lists them after the run and before cleanup
(:attr:`ExecutionResult.workspace <glasshouse.core.execution.ExecutionResult.workspace>`);
the receipt's ``artifacts.workspace`` carries the list. Plain data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: Per-file cap on the bytes hashed for ``artifacts.workspace`` (a larger file is listed
#: with its size, ``sha256`` null and ``unhashed: "file_cap"``).
DEFAULT_HASH_FILE_CAP = 64 << 20
#: Cap on the bytes hashed for ``artifacts.workspace`` in one run (past it: ``total_cap``).
DEFAULT_HASH_TOTAL_CAP = 256 << 20

FileKind = Literal["file", "symlink", "fifo", "socket", "device"]


@dataclass
class WrittenFile:
    """One file the run created, or an input it changed, as it is at the end of the run."""

    #: relative to the workspace
    path: str
    kind: FileKind
    #: ``created``: not an input; ``modified``: an input whose content or kind changed
    status: Literal["created", "modified"]
    #: bytes (a symlink: its target's length); None for a FIFO, socket or device
    size: int | None = None
    sha256: str | None = None
    #: why a regular file has no ``sha256``: ``file_cap``, ``total_cap`` or ``unreadable``
    unhashed: str | None = None
    #: a symlink's target, as stored (never followed)
    target: str | None = None


@dataclass
class WorkspaceScan:
    """A backend's listing of the files the run wrote (``collected``) or why there is none."""

    collected: bool
    #: why not collected, or what the listing lacks (a walk cut short)
    reason: str | None = None
    #: the workspace as the workload saw it (``/workspace``)
    root: str | None = None
    files: list[WrittenFile] = field(default_factory=list)
    #: files the run wrote past the listing's bound (counted, not listed)
    omitted: int = 0
    #: regular files listed without a digest (over a cap, unreadable)
    unhashed: int = 0
    hashed_bytes: int = 0
    file_cap: int | None = None
    total_cap: int | None = None

    @classmethod
    def not_collected(cls, reason: str) -> WorkspaceScan:
        return cls(collected=False, reason=reason)
