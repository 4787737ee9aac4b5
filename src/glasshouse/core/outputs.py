"""Save a run's output files (``ExecutionResult.outputs``) on the host, safely.

The bytes were written by untrusted code, and so was their name's shape, but not the host
directory they land in: each file goes to ``<directory>/<its workspace path>``, walked one
component at a time with ``O_NOFOLLOW`` (a symlink or a non-directory on the way is refused,
so nothing is written outside ``directory``), missing directories are created, and the file
is written to a temporary name beside its target, fsynced and renamed over it (a reader sees
the old file or the new one). An existing entry that is not a regular file (a symlink, a
directory, a FIFO) is never replaced.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from typing import Any

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Refused(Exception):
    pass


def save_outputs(
    outputs: Mapping[str, bytes], directory: str | os.PathLike[str]
) -> dict[str, str | None]:
    """Write each output under ``directory`` (created if missing); return name -> ``None``
    when saved, else the reason it was not."""
    done: dict[str, str | None] = {}
    if not outputs:
        return done
    try:
        os.makedirs(directory, exist_ok=True)
        root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        reason = f"cannot open output directory {os.fspath(directory)}: {exc.strerror or exc}"
        return dict.fromkeys(outputs, reason)
    try:
        for name, data in outputs.items():
            try:
                _save_one(root, name, data)
            except _Refused as why:
                done[name] = str(why)
            except OSError as exc:
                done[name] = f"cannot write: {exc.strerror or exc}"
            else:
                done[name] = None
    finally:
        os.close(root)
    return done


def mark_unsaved(receipt: dict[str, Any], reasons: Mapping[str, str | None]) -> dict[str, Any]:
    """Record in receipt data (``artifacts.outputs``) the outputs that could not be saved:
    their status becomes ``failed`` with the reason (size and sha256 stay: the run made them)."""
    for entry in receipt.get("artifacts", {}).get("outputs") or []:
        why = reasons.get(entry.get("path"))
        if why is not None and entry.get("status") == "copied":
            entry["status"] = "failed"
            entry["reason"] = f"not saved: {why}"
    return receipt


def _check_name(name: str) -> list[str]:
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise _Refused(f"not a relative path without '..': {name!r}")
    if "\x00" in name:
        raise _Refused("the name contains a NUL byte")
    return parts


def _save_one(root: int, name: str, data: bytes) -> None:
    parts = _check_name(name)
    dirfd = os.dup(root)
    try:
        for i, part in enumerate(parts[:-1]):
            nxt = _enter(dirfd, part, "/".join(parts[: i + 1]))
            os.close(dirfd)
            dirfd = nxt
        _write_beside(dirfd, parts[-1], data)
    finally:
        os.close(dirfd)


def _enter(dirfd: int, part: str, shown: str) -> int:
    """The directory ``part`` under ``dirfd``, opened (created if missing) without following
    a symlink."""
    try:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=dirfd)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=dirfd)
            return os.open(part, _DIR_FLAGS, dir_fd=dirfd)
    except OSError as exc:
        import errno

        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _Refused(f"{shown} is not a directory (a symlink is never followed)") from exc
        raise


def _write_beside(dirfd: int, leaf: str, data: bytes) -> None:
    try:
        st = os.stat(leaf, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise _Refused(f"the destination exists and is {kind} (not replaced)")
    tmp = f".{leaf}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666, dir_fd=dirfd)  # the umask applies, as for any new file
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        # rename replaces a directory entry and never follows a symlink at the target
        os.replace(tmp, leaf, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dirfd)
        raise
    os.fsync(dirfd)
