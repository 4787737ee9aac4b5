"""List what a run wrote in its host workspace: new files and changed inputs, with digests.

Run after the workload has ended and before the workspace is removed. Everything in it was
written by untrusted code, so the walk never follows a symlink (each directory is opened
relative to its parent with ``O_NOFOLLOW``; a symlink is listed with its target), never
opens a FIFO, socket or device (``lstat`` only), stays on the workspace's filesystem, and is
bounded: at most ``max_files`` listed (the rest counted), ``max_entries`` directory entries
read, ``max_depth`` levels entered, ``file_cap`` bytes hashed per file and ``total_cap`` in
all (past a cap a regular file is listed with its size, no digest and why).

A fresh workspace holds only the inputs when the run starts, so every other file in it at
the end is the run's; an input is listed when its content or kind changed (its digest, or
its size when it is too large to hash, differs from what was given).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from glasshouse.core.artifacts import (
    DEFAULT_HASH_FILE_CAP,
    DEFAULT_HASH_TOTAL_CAP,
    FileKind,
    WorkspaceScan,
    WrittenFile,
)
from glasshouse.core.execution import DEFAULT_LIST_CAP
from glasshouse.core.hashing import sha256

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: Directory entries read at most (a run that made millions of files is cut, and says so).
MAX_ENTRIES = 1_000_000
#: Directory levels entered at most (each holds one fd while its subtree is walked).
MAX_DEPTH = 128


@dataclass
class _Budget:
    file_cap: int
    total_cap: int
    hashed: int = 0
    unhashed: int = 0


@dataclass
class _Walk:
    root_dev: int
    max_entries: int
    max_depth: int
    entries: int = 0
    cut: list[str] = field(default_factory=list)


def scan(
    root: str | os.PathLike[str],
    inputs: Mapping[str, bytes],
    *,
    shown_as: str,
    max_files: int = DEFAULT_LIST_CAP,
    file_cap: int = DEFAULT_HASH_FILE_CAP,
    total_cap: int = DEFAULT_HASH_TOTAL_CAP,
    max_entries: int = MAX_ENTRIES,
    max_depth: int = MAX_DEPTH,
) -> WorkspaceScan:
    """The files the run wrote under ``root`` (``shown_as``: the path the workload saw)."""
    try:
        rootfd = os.open(root, _DIR)
    except OSError as exc:
        return WorkspaceScan.not_collected(f"the workspace could not be read: {exc.strerror}")
    budget = _Budget(file_cap, total_cap)
    out = WorkspaceScan(True, root=shown_as, file_cap=file_cap, total_cap=total_cap)
    try:
        walk = _Walk(os.fstat(rootfd).st_dev, max_entries, max_depth)
        given = {name: bytes(data) for name, data in inputs.items()}
        for name in sorted(given):
            entry = _changed_input(rootfd, name, given[name], budget)
            if entry is not None:
                _add(out, entry, max_files)
        for rel, dirfd, name in _entries(rootfd, "", walk, 0):
            if rel in given:
                continue  # looked at above
            entry = _describe(dirfd, name, rel, "created", budget)
            if entry is not None:
                _add(out, entry, max_files)
    finally:
        os.close(rootfd)
    out.unhashed, out.hashed_bytes = budget.unhashed, budget.hashed
    if walk.cut:
        out.reason = "the listing is incomplete: " + "; ".join(dict.fromkeys(walk.cut))
    return out


def _add(out: WorkspaceScan, entry: WrittenFile, max_files: int) -> None:
    if len(out.files) < max_files:
        out.files.append(entry)
    else:
        out.omitted += 1


def _entries(dirfd: int, prefix: str, walk: _Walk, depth: int) -> Iterator[tuple[str, int, str]]:
    """(relative path, fd of its directory, name) of every non-directory under ``dirfd``,
    depth first in name order; subdirectories entered without following symlinks."""
    try:
        with os.scandir(dirfd) as it:
            listed = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
    except OSError as exc:
        walk.cut.append(f"{prefix or '.'} could not be listed ({exc.strerror})")
        return
    for name, is_dir in listed:
        walk.entries += 1
        if walk.entries > walk.max_entries:
            walk.cut.append(f"stopped after {walk.max_entries} directory entries")
            return
        rel = f"{prefix}{name}"
        if not is_dir:
            yield rel, dirfd, name
            continue
        if depth + 1 > walk.max_depth:
            walk.cut.append(f"directories deeper than {walk.max_depth} levels not entered")
            continue
        try:
            sub = os.open(name, _DIR, dir_fd=dirfd)
        except OSError as exc:  # replaced meanwhile (a symlink: ELOOP), or unreadable
            walk.cut.append(f"{_shown(rel)} could not be entered ({exc.strerror})")
            continue
        try:
            if os.fstat(sub).st_dev != walk.root_dev:
                walk.cut.append(f"{_shown(rel)} is another filesystem (not entered)")
                continue
            yield from _entries(sub, f"{rel}/", walk, depth + 1)
        finally:
            os.close(sub)


def _changed_input(rootfd: int, name: str, data: bytes, budget: _Budget) -> WrittenFile | None:
    """The input ``name`` as it is now, if the run changed it (None: unchanged or gone)."""
    head, _, leaf = name.rpartition("/")
    dirfd = _open_parent(rootfd, head)
    if dirfd is None:
        return None
    try:
        entry = _describe(dirfd, leaf, name, "modified", budget)
    finally:
        os.close(dirfd)
    if entry is None or entry.kind != "file":
        return entry
    if entry.sha256 is not None:
        return None if entry.sha256 == sha256(data).hexdigest() else entry
    if entry.size != len(data) or entry.unhashed == "unreadable":
        return entry
    budget.unhashed -= 1  # too large to hash and of the size given: taken as unchanged
    return None


def _open_parent(rootfd: int, head: str) -> int | None:
    fd = os.dup(rootfd)
    for part in [p for p in head.split("/") if p]:
        try:
            nxt = os.open(part, _DIR, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None  # gone, or replaced by a symlink: the input is not there any more
        os.close(fd)
        fd = nxt
    return fd


def _describe(
    dirfd: int,
    name: str,
    rel: str,
    status: str,
    budget: _Budget,
) -> WrittenFile | None:
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        return None  # gone meanwhile: not there at the end
    mode = st.st_mode
    entry = WrittenFile(_shown(rel), _kind(mode), status)  # type: ignore[arg-type]
    if stat.S_ISDIR(mode):
        return None  # an input path that is now a directory: its files are walked
    if stat.S_ISLNK(mode):
        with contextlib.suppress(OSError):
            target = os.readlink(name, dir_fd=dirfd)
            entry.target, entry.size = _shown(target), len(os.fsencode(target))
        return entry
    if not stat.S_ISREG(mode):
        return entry  # a FIFO, socket or device: listed, never opened
    entry.size = st.st_size
    _hash(dirfd, name, st, entry, budget)
    return entry


def _hash(dirfd: int, name: str, st: os.stat_result, entry: WrittenFile, budget: _Budget) -> None:
    if st.st_size > budget.file_cap:
        entry.unhashed = "file_cap"
    elif budget.hashed + st.st_size > budget.total_cap:
        entry.unhashed = "total_cap"
    else:
        entry.sha256, entry.unhashed, size = _digest(dirfd, name, st, budget)
        entry.size = entry.size if size is None else size
    if entry.unhashed is not None:
        budget.unhashed += 1


def _digest(
    dirfd: int, name: str, st: os.stat_result, budget: _Budget
) -> tuple[str | None, str | None, int | None]:
    """(sha256, why not, bytes read) of the regular file ``name`` (the one ``st`` is of)."""
    try:
        fd = os.open(name, _FILE, dir_fd=dirfd)
    except OSError:
        return None, "unreadable", None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return None, "unreadable", None  # replaced between the lstat and the open
        h, left = sha256(), budget.file_cap + 1
        total_left = budget.total_cap - budget.hashed
        while left > 0:
            chunk = os.read(fd, min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
            budget.hashed += len(chunk)
        read = budget.file_cap + 1 - left
        if read > budget.file_cap:
            return None, "file_cap", None  # grew past the cap after the lstat
        if read > total_left:
            return None, "total_cap", None
        return h.hexdigest(), None, read
    except OSError:
        return None, "unreadable", None
    finally:
        os.close(fd)


def _kind(mode: int) -> FileKind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def _shown(name: str) -> str:
    """A file name as JSON can carry it (bytes that are not UTF-8 as ``\\xNN``)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
