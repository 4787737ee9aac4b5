"""One run's resources, made ahead of its start, and the status its runtime reports."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glasshouse.backends._tree import remove_tree
from glasshouse.backends._workspace import Workspace


@dataclass
class SandboxRun:
    """Everything one run needs besides its cgroup, made ahead of :meth:`SandboxBackend.start`.

    Used exactly once; :meth:`close` releases it (the backend calls it at cleanup).
    """

    workspace: Workspace
    host_uid: int
    host_gid: int
    seccomp_fd: int = -1
    #: bwrap's --json-status-fd pipe (child-pid, exit-code)
    status_r: int = -1
    status_w: int = -1
    #: glasshouse-init's pipe: the command's raw wait status
    init_r: int = -1
    init_w: int = -1
    used: bool = False
    closed: bool = False
    #: a session's: the workspace outlives each start of the sandbox (the session closes it)
    keep: bool = False
    #: the command is the sandbox's PID 1 itself (a session's step agent), no glasshouse-init
    no_init: bool = False
    #: more fds the sandbox's command inherits (a session's control socket), closed here
    #: after the fork
    extra_fds: tuple[int, ...] = ()
    #: gVisor: the per-run bundle and state directories (under the workspace's parent)
    extra_dirs: list[Path] = field(default_factory=list)

    def close_child_fds(self) -> None:
        """Close the parent's copies of fds only the child needs (after fork)."""
        for name in ("seccomp_fd", "status_w", "init_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)
        for fd in self.extra_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.extra_fds = ()

    def read_status(self, fd: int) -> list[dict[str, Any]]:
        """The JSON documents written to a status pipe (bwrap's or glasshouse-init's)."""
        if fd < 0:
            return []
        self.close_child_fds()
        data = b""
        os.set_blocking(fd, False)
        with contextlib.suppress(BlockingIOError, OSError):
            while len(data) < 65536 and (chunk := os.read(fd, 4096)):
                data += chunk
        return _json_docs(data)

    def drop_init(self) -> None:
        """Run the command as the sandbox's PID 1 itself, without glasshouse-init (a
        session's step agent, which reaps and reports its children itself)."""
        self.no_init = True
        for name in ("init_r", "init_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def close_fds(self) -> None:
        """Close every fd of this start of the sandbox (a kept run is started again with
        fresh ones)."""
        self.close_child_fds()
        for name in ("status_r", "init_r"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def close(self) -> None:
        if self.closed:
            return
        self.close_fds()
        for d in self.extra_dirs:
            with contextlib.suppress(OSError):
                remove_tree(d)
        self.workspace.remove()  # raises if it cannot: the receipt says so (cleanup_error)
        self.closed = True


def _json_docs(data: bytes) -> list[dict[str, Any]]:
    """Parse a stream of concatenated JSON objects, stopping at the first malformed one."""
    docs: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    text, pos = data.decode(errors="replace"), 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


def _read_status_file(path: Path | None) -> list[dict[str, Any]]:
    """glasshouse-init's status file (gVisor), read without following links, size-capped."""
    if path is None:
        return []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        return _json_docs(os.read(fd, 4096))
    finally:
        os.close(fd)


def _has_status(docs: list[dict[str, Any]]) -> bool:
    return any("wait-status" in d for d in docs)


def _last_runtime_line(stderr: bytes, prefix: str) -> str:
    for line in reversed(stderr.decode(errors="replace").splitlines()):
        if line.startswith(prefix) and line.strip():
            return line.strip()[:500]
    return ""
