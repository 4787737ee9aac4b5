"""Session contracts: a sandbox that lives across steps, as backends provide it.

A :class:`SessionCapable` backend opens a :class:`LiveSandbox` for a :class:`SessionSpec`:
one isolated environment (workspace, limits, network) that stays up between steps. Each
step runs through one of its two step backends, ordinary
:class:`~glasshouse.core.execution.Backend` objects, so the Engine observes and receipts a
step exactly as it does a one-shot run:

- ``commands``: ``spec.argv`` runs as a new process in the sandbox;
- ``interpreter``: ``spec.argv[-1]`` is Python source handed to the session's persistent
  interpreter (variables, imports and open files survive between steps). Its
  :class:`~glasshouse.core.execution.Handle` has ``workload_start.kind == "running"``: the
  interpreter is the workload from the hand-over on.

Steps of one sandbox run one at a time (the library's :class:`~glasshouse.session.Session`
serialises them). The workspace is reachable between steps through ``files``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from glasshouse.core.execution import Backend, ExecutionResult, Limits, check_env

FileType = Literal["file", "directory", "symlink", "other"]


@dataclass(frozen=True)
class SessionSpec:
    """What a session is given for its whole life (``limits.wall_s``/``cpu_s`` are per step,
    not used here; memory, pids and disk bound every step together)."""

    env: Mapping[str, str] | None = None
    network: bool = False
    limits: Limits = field(default_factory=Limits)
    files: Mapping[str, bytes] = field(default_factory=dict)
    #: the most bytes one file may have through the files API
    max_file_bytes: int = 64 << 20

    def validate(self) -> None:
        self.limits.validate()
        check_env(self.env)


@dataclass(frozen=True)
class FileInfo:
    """One workspace entry. ``sha256`` only for regular files (else None)."""

    name: str
    path: str
    type: FileType
    size: int
    mtime: float
    sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "type": self.type,
            "size": self.size,
            "mtime": self.mtime,
            "sha256": self.sha256,
        }


@runtime_checkable
class WorkspaceFiles(Protocol):
    """The live workspace, from outside the sandbox. Paths are relative to the workspace;
    nothing follows a symlink out of it or blocks on a FIFO. Errors:
    :class:`~glasshouse.core.errors.PathRefused`, ``PathOutside``, ``PathNotFound``,
    ``NotAFile``, ``FileTooLarge`` (all :class:`~glasshouse.core.errors.GlasshouseError`)."""

    def write(self, path: str, data: bytes) -> FileInfo: ...

    def read(self, path: str, max_bytes: int | None = None) -> bytes: ...

    def list(self, path: str = ".") -> list[FileInfo]: ...

    def delete(self, path: str) -> None: ...


@runtime_checkable
class LiveSandbox(Protocol):
    """One session's sandbox while it lives (see the module docstring)."""

    commands: Backend
    interpreter: Backend
    files: WorkspaceFiles
    #: facts for each step receipt's ``environment.sandbox.details``
    facts: dict[str, Any]
    #: "namespaces" | "gvisor" | "vm"
    isolation: str

    def pause(self) -> str:
        """Free CPU and memory, keep the state; returns what was kept (said in receipts)."""
        ...

    def resume(self) -> None: ...

    def usage(self) -> dict[str, int | None]:
        """What the session uses now: ``memory_bytes``, ``cpu_ms``, ``pids``."""
        ...

    def close(self) -> ExecutionResult:
        """End the sandbox, remove its workspace; the sandbox's own result (its resources,
        how it ended). Idempotent."""
        ...


@runtime_checkable
class SessionCapable(Protocol):
    """Optional, on top of :class:`~glasshouse.core.execution.Backend`."""

    def open_session(self, spec: SessionSpec) -> LiveSandbox: ...
