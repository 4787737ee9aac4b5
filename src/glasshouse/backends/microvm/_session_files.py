"""A microVM session's workspace from the host: write, read, list and delete through the
session agent's vsock connection, with the guarantees and errors of
:class:`~glasshouse.backends._workspace_files.HostWorkspaceFiles`. The path's syntax is
checked here; inside the guest every path is resolved by the kernel with ``openat2
(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`` from ``/work`` and files are
opened ``O_NONBLOCK`` and checked to be regular before a byte is read
(:mod:`glasshouse.guest.vm_session`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from glasshouse.backends._workspace_files import check_path
from glasshouse.core.errors import (
    BackendError,
    FileTooLarge,
    NotAFile,
    PathNotFound,
    PathOutside,
)
from glasshouse.core.session import FileInfo

from ._session_link import Link

#: A file operation may touch many fresh guest pages (~2 ms each on kvm_pvm).
FILE_OP_S = 300.0

_ERRORS: dict[str, tuple[type[Exception], str]] = {
    "outside": (PathOutside, "leads out of the workspace (a symlink or a mount)"),
    "notfound": (PathNotFound, "no such file or directory"),
    "notafile": (NotAFile, ""),
    "toolarge": (FileTooLarge, ""),
    "full": (FileTooLarge, "the workspace's disk limit is full"),
}


class VMWorkspaceFiles:
    """:class:`~glasshouse.core.session.WorkspaceFiles` of a live session VM; ``link``
    gives its connection (it raises while the VM is paused or gone)."""

    def __init__(self, link: Callable[[], Link], max_bytes: int) -> None:
        self._link = link
        self.max_bytes = max_bytes

    def _call(self, path: str, obj: dict[str, Any], data: bytes = b"") -> tuple[dict, bytes]:
        answer, payload = self._link().request({**obj, "path": path}, data, FILE_OP_S)
        if answer.get("op") == "ok":
            return answer, payload
        kind = str(answer.get("kind", ""))
        why = str(answer.get("error") or "refused by the guest")
        if kind in _ERRORS:
            cls, fixed = _ERRORS[kind]
            raise cls(path, fixed or why)  # type: ignore[call-arg]
        raise BackendError(f"workspace {obj.get('op')} {path!r}: {why}")

    def write(self, path: str, data: bytes) -> FileInfo:
        path = check_path(path)
        if len(data) > self.max_bytes:
            raise FileTooLarge(path, f"{len(data)} bytes is over the cap of {self.max_bytes}")
        answer, _ = self._call(path, {"op": "write"}, data)
        entry = dict(answer.get("info") or {})
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        return _info(entry, path)

    def read(self, path: str, max_bytes: int | None = None) -> bytes:
        path = check_path(path)
        limit = self.max_bytes if max_bytes is None else min(max_bytes, self.max_bytes)
        _, data = self._call(path, {"op": "read", "limit": limit})
        if len(data) > limit:  # the guest is untrusted
            raise FileTooLarge(path, f"over the cap of {limit} bytes")
        return data

    def list(self, path: str = ".") -> list[FileInfo]:
        path = check_path(path, allow_root=True)
        answer, _ = self._call(path, {"op": "list", "limit": self.max_bytes})
        entries = answer.get("entries")
        if not isinstance(entries, list):
            raise BackendError("the session's VM answered a listing that is not a list")
        return [_info(e, path) for e in entries]

    def delete(self, path: str) -> None:
        self._call(check_path(path), {"op": "delete"})


def _info(entry: Any, where: str) -> FileInfo:
    """A FileInfo from the guest's entry, type-checked (the guest is untrusted)."""
    try:
        kind = entry["type"] if entry["type"] in ("file", "directory", "symlink") else "other"
        digest = entry.get("sha256")
        return FileInfo(
            name=str(entry["name"]),
            path=str(entry["path"]),
            type=kind,
            size=int(entry["size"]),
            mtime=float(entry["mtime"]),
            sha256=digest if isinstance(digest, str) and len(digest) == 64 else None,
        )
    except (KeyError, TypeError, ValueError):
        raise BackendError(f"the session's VM answered a bad entry for {where!r}") from None
