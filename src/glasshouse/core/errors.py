"""Glasshouse's own errors: every one is a :class:`GlasshouseError`.

A workload's failure (non-zero exit, timeout, crash) is never an exception: it is data in the
result and the receipt. These are for what Glasshouse itself could not do. Each carries a
human ``diagnostic`` (its message, with the detail a user needs to act on it); the CLI maps
them to exit code 125 (2 for bad input files such as policies and keys).
"""

from __future__ import annotations

from collections.abc import Sequence


class GlasshouseError(Exception):
    """Glasshouse's own failure (not the workload's)."""

    def diagnostic(self) -> str:
        """A readable explanation (subclasses add where and why)."""
        return str(self)


class SpecError(GlasshouseError, ValueError):
    """An ExecutionSpec that cannot be run as given; the message says which field and why."""


class BackendError(GlasshouseError):
    """A backend could not prepare, start or supervise the workload."""


class BackendUnavailable(BackendError):
    """The backend cannot work on this host (missing binary, capability, kernel feature)."""


class CommandNotRunnable(BackendError):
    """The command does not exist (exit code 127) or cannot be executed (126), as in a shell."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ObserverUnavailable(GlasshouseError):
    """An observer cannot work on this host (the run goes on; the receipt says why)."""


class ReceiptError(GlasshouseError, ValueError):
    """A receipt could not be read, or is not a valid receipt of a known version."""


class CommandFailed(GlasshouseError):
    """Raised by ``Result.check_returncode()`` only: the command exited non-zero."""

    def __init__(self, args: Sequence[str], returncode: int, error: str | None = None) -> None:
        why = f" ({error})" if error else ""
        super().__init__(f"command {list(args)!r} returned {returncode}{why}")
        self.args_run = list(args)
        self.returncode = returncode
        self.error = error


class SessionError(GlasshouseError):
    """A session request that cannot be served as asked."""


class SessionBusy(SessionError):
    """The session is already running a step (one step at a time)."""


class SessionGone(SessionError):
    """The session was closed or expired."""


class SessionPaused(SessionError):
    """The session is paused: resume it first."""


class WorkspacePathError(SessionError):
    """A workspace file request that cannot be served; subclasses say why."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path!r}: {why}")
        self.path = path
        self.why = why


class PathRefused(WorkspacePathError, ValueError):
    """Not a valid workspace path (absolute, ``..``, empty, NUL)."""


class PathOutside(WorkspacePathError):
    """The path leads out of the workspace (a symlink or a mount on the way)."""


class PathNotFound(WorkspacePathError):
    """Nothing at that path."""


class NotAFile(WorkspacePathError):
    """A directory, FIFO, device... where a regular file (or a directory) was asked for."""


class FileTooLarge(WorkspacePathError):
    """Over the size cap, or the workspace's disk limit is full."""
