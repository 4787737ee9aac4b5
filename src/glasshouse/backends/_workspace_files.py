"""A live workspace's files, from the host: write, read, list, delete, never leaving it.

Every path is resolved by the kernel with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
| RESOLVE_NO_XDEV)`` from an fd on the workspace root: a symlink is followed only while it
stays inside (one that leads out, even through ``..`` or ``/proc/self/...``, fails with
EXDEV/ELOOP -> :class:`PathOutside`), a mount on the way is refused, and a race with the
sandbox changing the tree cannot redirect the host outside. Files open with ``O_NONBLOCK``
(a FIFO never blocks us) and are checked to be regular before a byte is read.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
from pathlib import Path

from glasshouse.core.errors import (
    FileTooLarge,
    NotAFile,
    PathNotFound,
    PathOutside,
    PathRefused,
)
from glasshouse.core.session import FileInfo

_SYS_OPENAT2 = 437  # x86-64 and arm64 alike
_RESOLVE = 0x01 | 0x02 | 0x08  # NO_XDEV | NO_MAGICLINKS | BENEATH
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE)
    fd = _libc.syscall(
        _SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how)
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def check_path(path: str, *, allow_root: bool = False) -> str:
    """``path`` normalised (no leading ``./``), or :class:`PathRefused`."""
    if not isinstance(path, str) or "\x00" in path:
        raise PathRefused(str(path), "a workspace path is a string without NUL bytes")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/"):
        raise PathRefused(path, "must be relative to the workspace")
    if ".." in parts:
        raise PathRefused(path, "must not contain '..'")
    if not parts and not allow_root:
        raise PathRefused(path, "names the workspace itself, not a file in it")
    return "/".join(parts) or "."


class HostWorkspaceFiles:
    """:class:`~glasshouse.core.session.WorkspaceFiles` over a host directory owned by the
    sandbox's ``uid``/``gid`` (new files and directories are given to them)."""

    def __init__(self, root: Path, uid: int, gid: int, max_bytes: int) -> None:
        self.root = root
        self.uid = uid
        self.gid = gid
        self.max_bytes = max_bytes

    # -- helpers -------------------------------------------------------------------------
    def _root_fd(self) -> int:
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _open(self, path: str, flags: int, mode: int = 0) -> int:
        root = self._root_fd()
        try:
            return _openat2(root, path, flags, mode)
        except OSError as exc:
            raise _map(exc, path) from None
        finally:
            os.close(root)

    def _own(self, fd: int) -> None:
        if os.geteuid() == 0:
            os.fchown(fd, self.uid, self.gid)

    def _parent(self, path: str, create: bool) -> tuple[int, str]:
        """An fd on ``path``'s directory (made, owned by the sandbox, when ``create``) and
        the last component."""
        head, _, name = path.rpartition("/")
        fd = self._root_fd()
        try:
            for part in [p for p in head.split("/") if p]:
                try:
                    nxt = _openat2(fd, part, os.O_RDONLY | os.O_DIRECTORY)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nxt = _openat2(fd, part, os.O_RDONLY | os.O_DIRECTORY)
                    self._own(nxt)
                os.close(fd)
                fd = nxt
        except OSError as exc:
            os.close(fd)
            raise _map(exc, path) from None
        return fd, name

    # -- the API -------------------------------------------------------------------------
    def write(self, path: str, data: bytes) -> FileInfo:
        path = check_path(path)
        if len(data) > self.max_bytes:
            raise FileTooLarge(path, f"{len(data)} bytes is over the cap of {self.max_bytes}")
        dirfd, name = self._parent(path, create=True)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | os.O_NOFOLLOW
            try:
                fd = _openat2(dirfd, name, flags, 0o644)
            except OSError as exc:
                raise _map(exc, path) from None
        finally:
            os.close(dirfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotAFile(path, "not a regular file")
            self._own(fd)
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                raise _map(exc, path) from None
            return _info(path, os.fstat(fd), hashlib.sha256(data).hexdigest())
        finally:
            os.close(fd)

    def read(self, path: str, max_bytes: int | None = None) -> bytes:
        path = check_path(path)
        limit = self.max_bytes if max_bytes is None else min(max_bytes, self.max_bytes)
        fd = self._open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotAFile(path, "not a regular file")
            if st.st_size > limit:
                raise FileTooLarge(path, f"{st.st_size} bytes is over the cap of {limit}")
            chunks, total = [], 0
            while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise FileTooLarge(path, f"grew past the cap of {limit} bytes")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def list(self, path: str = ".") -> list[FileInfo]:
        path = check_path(path, allow_root=True)
        fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
        out = []
        try:
            for name in sorted(os.listdir(fd)):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed meanwhile by the sandbox
                rel = name if path == "." else f"{path}/{name}"
                digest = _digest(fd, name, st, self.max_bytes)
                out.append(_info(rel, st, digest))
        except OSError as exc:
            raise _map(exc, path) from None
        finally:
            os.close(fd)
        return out

    def delete(self, path: str) -> None:
        path = check_path(path)
        dirfd, name = self._parent(path, create=False)
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(name, dir_fd=dirfd)
            else:
                os.unlink(name, dir_fd=dirfd)
        except OSError as exc:
            raise _map(exc, path) from None
        finally:
            os.close(dirfd)


def _digest(dirfd: int, name: str, st: os.stat_result, cap: int) -> str | None:
    if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
        return None
    try:
        fd = _openat2(dirfd, name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def _info(path: str, st: os.stat_result, digest: str | None) -> FileInfo:
    if stat.S_ISREG(st.st_mode):
        kind = "file"
    elif stat.S_ISDIR(st.st_mode):
        kind = "directory"
    elif stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    else:
        kind = "other"
    return FileInfo(path.rpartition("/")[2], path, kind, st.st_size, st.st_mtime, digest)  # type: ignore[arg-type]


def _map(exc: OSError, path: str) -> Exception:
    code = exc.errno
    if code in (errno.EXDEV, errno.ELOOP):
        return PathOutside(path, "leads out of the workspace (a symlink or a mount)")
    if code == errno.ENOENT:
        return PathNotFound(path, "no such file or directory")
    if code in (errno.ENOTDIR, errno.EISDIR, errno.ENXIO, errno.ENOTEMPTY):
        return NotAFile(path, exc.strerror or "not a regular file")
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return FileTooLarge(path, f"the workspace's disk limit is full ({exc.strerror})")
    return NotAFile(path, exc.strerror or str(exc))
