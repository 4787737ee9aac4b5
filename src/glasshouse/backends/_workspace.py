"""Per-run sandbox workspaces on the host: created fresh, filled with inputs, read back safely.

A workspace is a directory ``<base>/<run id>/`` owned by the run's unprivileged host uid,
mode 0700, bind-mounted read-write as the sandbox's cwd. Everything in it after the run was
written by untrusted code, so outputs are read without following any symlink (each path
component is opened with ``O_NOFOLLOW`` relative to the previous one), only regular files
are copied, FIFOs cannot block us (``O_NONBLOCK``) and sizes are capped. Removal is
:func:`._tree.remove_tree` (any depth, bounded fds, no symlink followed, modes fixed only
inside the workspace); a workspace with a disk limit is a tmpfs mounted on that directory
(:mod:`._quota`), unmounted first. The shared base directory's mode is never changed on an
error path; :func:`ensure_base` puts it back to what runs need before every run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import _owner, _quota
from ._tree import remove_tree

_log = logging.getLogger("glasshouse.sandbox")

#: Per-file and total cap on outputs copied back (bytes).
DEFAULT_OUTPUT_CAP = 16 << 20


class WorkspaceError(Exception):
    pass


def sweep(base: Path, legacy_age_s: float = 3600.0, failures: list[str] | None = None) -> int:
    """Remove workspaces whose creating process is gone (killed, crashed: it could not clean
    up), unmounting their disk quota first. A live creator's are never touched; a name
    without an owner (older versions) goes once it is ``legacy_age_s`` old. Never raises:
    returns how many were removed; each leftover that could not be is logged and added to
    ``failures``."""
    removed = 0
    failures = [] if failures is None else failures
    try:
        base_dev = os.stat(base).st_dev
        entries = list(base.glob("ws-*"))
    except OSError as exc:
        failures.append(f"{base}: {exc}")
        return 0
    for path in entries:
        if not _abandoned(path, legacy_age_s):
            continue
        try:
            _quota.unmount_all(path, base_dev)
            remove_tree(path)
        except FileNotFoundError:
            continue
        except Exception as exc:  # one bad leftover must never stop a start
            failures.append(f"{path.name}: {exc}")
            _log.warning("cannot remove leftover workspace %s: %s", path, exc)
            continue
        removed += 1
    return removed


#: workspaces whose removal failed (retried by :func:`retry_left` before later runs)
_left: dict[Path, Workspace] = {}
_left_lock = threading.Lock()


def retry_left() -> None:
    """Try again to remove this process's workspaces that could not be removed before (the
    sweep only takes those of dead processes). Quiet: they stay listed until it works."""
    if not _left or not _left_lock.acquire(blocking=False):
        return  # nothing left, or another thread is at it
    try:
        for workspace in list(_left.values()):
            with contextlib.suppress(Exception):
                workspace.remove()
    finally:
        _left_lock.release()


def _abandoned(path: Path, legacy_age_s: float) -> bool:
    owner, _, rest = path.name[3:].partition("-")
    pid, _, start = owner.partition(".")
    if rest and pid.isdigit() and start.isdigit():
        return not _owner.alive(f"{pid} {start}")
    try:
        return time.time() - path.lstat().st_mtime >= legacy_age_s
    except OSError:
        return False


@dataclass
class Workspace:
    """One run's private directory (``path``), owned by ``uid``/``gid``."""

    path: Path
    uid: int
    gid: int
    removed: bool = False
    #: how the disk limit is enforced ("" when the run has none)
    quota: str = ""
    #: what happened to each requested output ("copied", "missing", "too large", ...)
    output_status: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, base: Path, uid: int, gid: int) -> Workspace:
        """A new, empty directory under ``base`` (see :func:`ensure_base`, called first)."""
        # The creator's identity is in the name: sweep() removes what a dead process left.
        pid, start = _owner.me().split()
        path = base / f"ws-{pid}.{start}-{secrets.token_hex(8)}"
        os.mkdir(path, 0o700)
        try:
            if os.geteuid() == 0:
                os.chown(path, uid, gid)
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            raise
        return cls(path, uid, gid)

    def limit_disk(self, size: int) -> str:
        """Cap what the (still unused) workspace can hold at ``size`` bytes; returns how the
        limit is enforced. Raises :class:`_quota.QuotaUnavailable` where it cannot be."""
        self.quota = _quota.mount(self.path, size, self.uid, self.gid)
        return self.quota

    def resize_disk(self, size: int) -> str:
        """Change the size of the workspace's quota (made by :meth:`limit_disk`), also while a
        sandbox uses it."""
        if not self.quota:
            raise _quota.QuotaUnavailable("the workspace has no quota to resize")
        self.quota = _quota.resize(self.path, size)
        return self.quota

    def write_inputs(self, files: dict[str, bytes] | None) -> None:
        """Place ``files`` (relative path -> bytes) in the still-unused workspace."""
        for name, data in (files or {}).items():
            target = self.path / name
            parent = target.parent
            for d in reversed([parent, *parent.parents]):
                if d == self.path or not d.is_relative_to(self.path):
                    continue
                if not d.exists():
                    os.mkdir(d, 0o755)
                    self._own(d)
            if not isinstance(data, bytes | bytearray):
                raise WorkspaceError(f"input file {name!r} must be bytes")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                self._own(target, fd)
            finally:
                os.close(fd)

    def _own(self, path: Path, fd: int | None = None) -> None:
        if os.geteuid() != 0:
            return
        if fd is not None:
            os.fchown(fd, self.uid, self.gid)
        else:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def collect_outputs(self, names: list[str], cap: int = DEFAULT_OUTPUT_CAP) -> dict[str, bytes]:
        """Copy back the regular files ``names``; at most ``cap`` bytes each and in total.

        Anything else (missing, symlink, directory, FIFO, over the cap) is skipped and its
        reason recorded in :attr:`output_status`.
        """
        out: dict[str, bytes] = {}
        budget = cap
        for name in names:
            try:
                data = self._read_beneath(name, min(cap, budget))
            except _Skip as why:
                self.output_status[name] = str(why)
                continue
            out[name] = data
            budget -= len(data)
            self.output_status[name] = f"copied ({len(data)} bytes)"
        return out

    def _read_beneath(self, name: str, limit: int) -> bytes:
        parts = name.split("/")
        flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            dirfd = os.open(self.path, flags_dir)
        except OSError as exc:
            raise _Skip(f"workspace unreadable: {exc.strerror}") from exc
        try:
            for part in parts[:-1]:
                try:
                    nxt = os.open(part, flags_dir, dir_fd=dirfd)
                except OSError as exc:
                    raise _Skip(_why(exc, "a parent is not a plain directory")) from exc
                os.close(dirfd)
                dirfd = nxt
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
            try:
                fd = os.open(parts[-1], flags, dir_fd=dirfd)
            except OSError as exc:
                raise _Skip(_why(exc, "a symlink (not followed)")) from exc
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise _Skip("not a regular file")
                if st.st_size > limit:
                    raise _Skip(f"too large ({st.st_size} bytes > cap {limit})")
                chunks, total = [], 0
                while True:
                    chunk = os.read(fd, min(1 << 20, limit + 1 - total))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    total += len(chunk)
                    if total > limit:
                        raise _Skip(f"too large (grew past cap {limit})")
                return b"".join(chunks)
            finally:
                os.close(fd)
        finally:
            os.close(dirfd)

    def remove(self) -> None:
        """Unmount the quota (if any) and delete the workspace. On failure (e.g. no fds
        left) it raises and stays for the next call or the sweep; nothing outside the
        workspace is touched, whatever fails."""
        if self.removed:
            return
        try:
            if self.quota:
                _quota.unmount(self.path)
                self.quota = ""
            with contextlib.suppress(FileNotFoundError):
                remove_tree(self.path)
        except BaseException:
            _left[self.path] = self
            raise
        _left.pop(self.path, None)
        self.removed = True


class _Skip(Exception):
    pass


def _why(exc: OSError, loop_reason: str) -> str:
    import errno

    if exc.errno == errno.ENOENT:
        return "missing"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return loop_reason
    return exc.strerror or str(exc)


def ensure_base(base: Path, readable: Iterable[Path] = ()) -> None:
    """Create the workspace root, or repair it: 0711 (traversable, not listable) and, when we
    are root, root-owned; each directory in ``readable`` (the /etc skeletons) at least 0755.
    Called before every run: a stat per directory when all is well. A repair that fails is
    logged, not raised (the run then says what is wrong)."""
    try:
        st = os.stat(base)
    except FileNotFoundError:
        base.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(base, 0o711)  # whatever the umask
        st = os.stat(base)
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
        _repair(base, f"owned by {st.st_uid}:{st.st_gid}", os.chown, base, 0, 0)
    if stat.S_IMODE(st.st_mode) != 0o711:
        _repair(base, f"mode {stat.S_IMODE(st.st_mode):o}", os.chmod, base, 0o711)
    for path in readable:
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o755 != 0o755:
                mode = stat.S_IMODE(st.st_mode)
                _repair(path, f"mode {mode:o}", os.chmod, path, mode | 0o755)


def _repair(path: Path, what: str, fix: Callable[..., None], *args: object) -> None:
    try:
        fix(*args)
    except OSError as exc:
        _log.warning("%s: %s, cannot repair it: %s", path, what, exc)
    else:
        _log.warning("%s: %s, repaired", path, what)
