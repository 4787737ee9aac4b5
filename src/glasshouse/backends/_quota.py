"""A per-run disk quota on a sandbox workspace: a size-capped tmpfs mounted on it (root only).

Measured against the alternatives (docs/sandbox.md, "Disk quota"; bench/workspace_quota.py):
mounting and unmounting the tmpfs costs well under a millisecond; an ext4 image on a loop
device (disk-backed) costs 20-80 ms per run (mkfs, loop setup, mount, unmount); project
quotas need a filesystem mounted with ``prjquota``, which the base directory's usually is
not. The tmpfs's pages are memory, charged to the memory cgroup of the process that writes
them (the run's own): a run whose memory limit is below its disk limit can be OOM-killed
before it fills the quota.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_REMOUNT = 0x20
_MNT_DETACH = 0x2
_UMOUNT_NOFOLLOW = 0x8
#: The mount's source name (what /proc/<pid>/mountinfo shows as the device).
SOURCE = "glasshouse-workspace"

_libc = ctypes.CDLL(None, use_errno=True)


class QuotaUnavailable(Exception):
    """The quota cannot be applied here (not root, mount refused)."""


def inodes_for(size: int) -> int:
    """Inode cap of a quota of ``size`` bytes: one per 4 KiB page, at least 4096 (empty files
    take no blocks, so the size alone would not bound them)."""
    return max(4096, size // 4096)


def mount(path: Path, size: int, uid: int, gid: int) -> str:
    """Mount a tmpfs of ``size`` bytes on the (empty) directory ``path``, root dir 0700 owned
    by ``uid``:``gid``. Returns how the limit is enforced, for the receipt."""
    if os.geteuid() != 0:
        raise QuotaUnavailable(
            "a disk limit needs root: it is a tmpfs mounted on the workspace "
            "(run as root, or run without a disk limit)"
        )
    inodes = inodes_for(size)
    data = f"size={size},nr_inodes={inodes},mode=0700"
    rc = _libc.mount(
        SOURCE.encode(), os.fsencode(path), b"tmpfs", _MS_NOSUID | _MS_NODEV, data.encode()
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise QuotaUnavailable(f"cannot mount the workspace tmpfs: {os.strerror(err)}")
    try:
        # uid=/gid= options would show the host uid in the sandbox's mountinfo: chown instead
        os.chown(path, uid, gid)
    except OSError:
        unmount(path)
        raise
    return (
        f"tmpfs quota on the workspace: {size} bytes, {inodes} inodes; writes past it get "
        "ENOSPC; RAM-backed, charged to the run's memory cgroup"
    )


def resize(path: Path, size: int) -> str:
    """Set the size of the tmpfs quota mounted on ``path`` (in use or not: a sandbox that
    bind-mounted it sees the new size at once). Raises QuotaUnavailable where it cannot."""
    inodes = inodes_for(size)
    data = f"size={size},nr_inodes={inodes}"
    flags = _MS_REMOUNT | _MS_NOSUID | _MS_NODEV
    if _libc.mount(SOURCE.encode(), os.fsencode(path), b"tmpfs", flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise QuotaUnavailable(f"cannot resize the workspace tmpfs: {os.strerror(err)}")
    return (
        f"tmpfs quota on the workspace: {size} bytes, {inodes} inodes; writes past it get "
        "ENOSPC; RAM-backed, charged to the run's memory cgroup"
    )


def unmount(path: Path) -> None:
    """Unmount whatever is mounted on ``path`` (nothing mounted: nothing to do). A mount still
    busy is detached: it leaves the mount table now and is freed when its last user goes."""
    for flags in (_UMOUNT_NOFOLLOW, _UMOUNT_NOFOLLOW | _MNT_DETACH):
        if _libc.umount2(os.fsencode(path), flags) == 0:
            return
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return  # not a mount point (any more)
        if err != errno.EBUSY:
            raise OSError(err, f"cannot unmount the workspace quota: {os.strerror(err)}", path)
    raise OSError(errno.EBUSY, "cannot unmount the workspace quota", str(path))


def unmount_all(path: Path, base_dev: int) -> None:
    """Unmount every mount stacked on ``path`` (a leftover of a dead process), until it is
    back on the base directory's filesystem (``base_dev``)."""
    for _ in range(16):
        try:
            if os.lstat(path).st_dev == base_dev:
                return
        except FileNotFoundError:
            return
        unmount(path)
    raise OSError(errno.EBUSY, "mounts keep appearing on the workspace", str(path))
