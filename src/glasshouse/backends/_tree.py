"""Remove a directory tree written by untrusted code, at any depth (:func:`remove_tree`).

:func:`shutil.rmtree` recurses (RecursionError past ~1,000 levels on 3.11, which left a
workspace behind and then broke every sweep) and holds one fd per level. This walk is
iterative and holds at most four descriptors whatever the depth: the parent it started in,
the directory it is emptying, and briefly a child or a scan. It climbs back through ``..``
and checks each parent against the identity (device, inode) recorded on the way down, so a
tree moved while it is walked makes the removal fail instead of deleting elsewhere.

Nothing is followed: every open is ``O_NOFOLLOW`` relative to a directory fd, a symlink is
unlinked as a name, and a directory on another filesystem (a mount point inside the tree) is
never entered. Directories the workload made unreadable or read-only (``chmod 0000``) get
their mode fixed, and only ever directories inside the tree being removed: never its parent.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_PATH = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_T = TypeVar("_T")


@dataclass
class _Frame:
    """One directory on the way down: its name in its parent, identity, subdirs left."""

    name: str
    ident: tuple[int, int]
    pending: list[str] = field(default_factory=list)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` and everything beneath it. FileNotFoundError if it does not exist;
    any other failure is an OSError naming what could not be removed."""
    parent, name = os.path.split(os.fspath(path).rstrip("/"))
    top = os.open(parent or ".", _DIR)
    try:
        st = os.stat(name, dir_fd=top, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            _remove_dir(top, name)
        else:
            os.unlink(name, dir_fd=top)
    finally:
        os.close(top)


def _remove_dir(top: int, name: str) -> None:
    cur = _enter(top, name, None, inside=False)
    if cur < 0:
        return
    root_dev = os.fstat(cur).st_dev
    stack = [_Frame(name, _ident(cur))]
    try:
        while stack:
            frame = stack[-1]
            if frame.pending:
                child = frame.pending.pop()
                fd = _enter(cur, child, root_dev, inside=True)
                if fd >= 0:
                    os.close(cur)
                    cur = fd
                    stack.append(_Frame(child, _ident(fd)))
                continue
            frame.pending = _clear_files(cur)
            if frame.pending:
                continue
            stack.pop()  # empty: climb to its parent and remove it there
            parent = _climb(cur, stack[-1].ident) if stack else top
            os.close(cur)
            cur = parent if stack else -1
            _fixing_modes(cur, functools.partial(os.rmdir, frame.name, dir_fd=parent))
    finally:
        if cur >= 0:
            os.close(cur)


def _enter(parent: int, name: str, root_dev: int | None, *, inside: bool) -> int:
    """Open directory ``name`` under ``parent`` (-1 if it is gone or no longer a directory,
    in which case the name was unlinked). ``inside``: ``parent`` belongs to the tree."""
    try:
        fd = _open_dir(parent, name, inside)
    except FileNotFoundError:
        return -1
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        _unlink(parent, name, inside)  # replaced by a file or symlink since the scan
        return -1
    if root_dev is not None and os.fstat(fd).st_dev != root_dev:
        os.close(fd)
        raise OSError(errno.EXDEV, "a mount point inside the tree is not entered", name)
    return fd


def _open_dir(parent: int, name: str, inside: bool) -> int:
    try:
        return os.open(name, _DIR, dir_fd=parent)
    except PermissionError:
        if inside:
            os.fchmod(parent, 0o700)
        _chmod_beneath(parent, name)  # the directory itself (never its parent when on top)
        return os.open(name, _DIR, dir_fd=parent)


def _chmod_beneath(parent: int, name: str) -> None:
    """chmod 0700 the directory ``name`` under ``parent`` without following a symlink (an
    O_PATH fd needs no permission on the target; its /proc link is that very inode)."""
    fd = os.open(name, _PATH, dir_fd=parent)
    try:
        os.chmod(f"/proc/self/fd/{fd}", 0o700)
    finally:
        os.close(fd)


def _clear_files(fd: int) -> list[str]:
    """Unlink every non-directory in ``fd``; return the names of its subdirectories."""
    subdirs: list[str] = []
    with _fixing_modes(fd, lambda: os.scandir(fd)) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                _unlink(fd, entry.name, True)
    return subdirs


def _unlink(parent: int, name: str, inside: bool) -> None:
    try:
        _fixing_modes(parent if inside else -1, lambda: os.unlink(name, dir_fd=parent))
    except FileNotFoundError:
        pass


def _climb(cur: int, want: tuple[int, int]) -> int:
    parent = _fixing_modes(cur, lambda: os.open("..", _DIR, dir_fd=cur))
    if _ident(parent) != want:
        os.close(parent)
        raise OSError(errno.ESTALE, "the tree was moved while it was being removed")
    return parent


def _fixing_modes(fd: int, op: Callable[[], _T]) -> _T:
    """Run ``op()``; on EACCES make directory ``fd`` (one inside the tree, -1: none) 0700
    and try once more."""
    try:
        return op()
    except PermissionError:
        if fd < 0:
            raise
        os.fchmod(fd, 0o700)
        return op()


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino
