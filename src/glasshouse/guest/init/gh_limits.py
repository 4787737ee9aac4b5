"""The request's limits inside the guest, applied by this init (PID 1). The guest kernel has
no cgroups, so they are the kernel's per-process limits:

- ``disk_bytes``: the size of the workspace's tmpfs (/work), remounted before the files go
  in; writes past it get ENOSPC.
- ``memory_bytes`` for an in-process run: a cap on what the warm interpreter's heap may
  take (a fence block holds the pre-faulted heap beyond the limit, ``RLIMIT_DATA`` stops it
  from growing past it): the run gets MemoryError, reported as ``oom``. Always capped at
  what the guest can still give, so the run never exhausts the guest's RAM (the OOM killer
  never kills PID 1: the guest would panic).
- for an exec'd command: ``memory_bytes`` as ``RLIMIT_DATA``, ``file_size_bytes`` as
  ``RLIMIT_FSIZE`` and ``pids`` as ``RLIMIT_NPROC``, set (soft) on this init around the
  spawn so the command starts bound by them (no window before a prlimit), then made hard on
  the command; ``cpu_s`` by prlimit after it (an RLIMIT_CPU below this init's own CPU time
  would kill PID 1). This init only ever lowers and restores its soft limits.
- ``pids`` (both ways): ``RLIMIT_NPROC`` only binds an unprivileged real uid, so the run (or
  the spawn) happens as the guest user ``nobody``: the calling thread's ids are switched by
  raw syscalls (glibc's setresuid would signal every thread), keeping the saved uid 0 so
  the init takes root back afterwards.

And whether the guest kernel's OOM killer struck during the run (its ``/dev/kmsg`` lines).
The workload owns the VM and could undo any of this; the host bounds the VM itself.
Only built-in modules at import (resource is loaded by the callers' warm-up)."""

from __future__ import annotations

import ctypes
import os

from gh_system import PRE, libc

WORKSPACE = "/work"
NOBODY = 65534
#: Guest memory kept free for the kernel, the streams and the result when an in-process
#: run is capped at what the guest can still give.
RESERVE_BYTES = 24 << 20
#: Memory an in-process run of a restored VM may map beyond the pre-faulted heap (a
#: cold-booted guest has none: there it may take what the guest can give): room for thread
#: stacks (1 MiB each, counted whole) and a little fresh memory. On kvm_pvm each fresh MiB
#: costs the emulated guest kernel ~0.5 s: past the heap a run fails in seconds instead of
#: crawling towards the guest's RAM until its deadline.
GROWTH_BYTES = 32 << 20
#: Of an in-process run's memory, address space kept for new mappings (thread stacks).
MAP_ROOM = 16 << 20
_MS_NOSUID, _MS_NODEV, _MS_REMOUNT = 2, 4, 32
_SYS_SETRESUID, _SYS_SETRESGID = 117, 119  # x86_64
_MIB = 1 << 20


def limit_workspace(size: int | None, root: str = WORKSPACE) -> int | None:
    """Remount the workspace's tmpfs with ``size`` bytes and an inode cap (one per 4 KiB,
    at least 4096, as the sandbox's quota), at most what the guest can give (measured
    before the snapshot). A limit that cannot be applied fails the run. Returns the size
    applied."""
    if size is None:
        return None
    if "room" in PRE:
        size = min(int(size), PRE["room"][1])
    inodes = max(4096, int(size) // 4096)
    data = f"size={int(size)},nr_inodes={inodes}".encode()
    flags = _MS_REMOUNT | _MS_NOSUID | _MS_NODEV
    if libc.mount(b"tmpfs", root.encode(), b"tmpfs", flags, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot limit the workspace to {size} bytes: {os.strerror(err)}")
    return int(size)


def workspace_full(root: str = WORKSPACE) -> bool:
    """Is the workspace's tmpfs full (less than a page left)?"""
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize < 4096


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_free() -> tuple[int, int]:
    """(free bytes in glibc's heap, of which the top chunk): memory an allocation can take
    without a new page, when the heap was pre-faulted."""
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.fordblks), int(info.keepcost)


def _status_kib(path: str, key: str) -> int:
    with open(path, "rb") as f:
        for line in f.read().split(b"\n"):
            if line.startswith(key.encode() + b":"):
                return int(line.split()[1])
    raise ValueError(f"{key} not in {path}")


def guest_room() -> tuple[int, int]:
    """(bytes of private writable memory this process maps now, bytes the guest can still
    give): read before the snapshot by the warm-up (the same in every restored VM)."""
    if "room" not in PRE:
        data = _status_kib("/proc/self/status", "VmData") * 1024
        free = _status_kib("/proc/meminfo", "MemAvailable") * 1024
        return data, max(0, free - RESERVE_BYTES)
    return PRE["room"]


class HeapCap:
    """An in-process run's memory: ``limit`` bytes it may map beyond what the warm
    interpreter holds (None: whatever the guest can give), never more than the guest can
    give. Part of it is address space for mappings (thread stacks, counted whole: up to
    MAP_ROOM, a quarter of a small limit), the rest free heap; free heap beyond that is held
    by a fence block, and growth beyond the budget is refused by ``RLIMIT_DATA`` (the soft
    limit: the code runs as root or can become root again, so a hard one would bind
    nothing). :meth:`release` undoes both after the run."""

    def __init__(self, limit: int | None) -> None:
        import resource

        self._resource = resource
        # Measured before the snapshot where there is one: walking glibc's free lists
        # touches every free chunk, a host fault per page in a restored VM (~0.1 s).
        free, top = PRE.get("heap") or heap_free()
        data, room = guest_room()
        can = free + (min(room, GROWTH_BYTES) if "room" in PRE else room)
        budget = can if limit is None else min(int(limit), can)
        self.limit = limit
        self.by_guest = limit is None or budget < int(limit)
        self.budget = budget
        # free heap - fence + growth == budget, with at least the mappings' room to grow
        growth = max(min(MAP_ROOM, budget // 4), budget - free)
        fence = min(top, max(0, free + growth - budget))
        self._fence = 0
        if fence:
            libc.malloc.restype = ctypes.c_void_p
            self._fence = libc.malloc(ctypes.c_size_t(fence)) or 0
        self._saved: tuple[int, int] | None = PRE.get("rlimit_data") or resource.getrlimit(
            resource.RLIMIT_DATA
        )
        resource.setrlimit(resource.RLIMIT_DATA, (data + growth, self._saved[1]))

    def release(self) -> None:
        if self._saved is not None:
            self._resource.setrlimit(self._resource.RLIMIT_DATA, self._saved)
            self._saved = None
        if self._fence:
            libc.free.argtypes = [ctypes.c_void_p]
            libc.free(ctypes.c_void_p(self._fence))
            self._fence = 0

    def note(self) -> str:
        """Why a MemoryError ended the run (the ``oom`` field of the result)."""
        if self.by_guest:
            return (
                f"MemoryError: the guest's memory for this run ({self.budget // _MIB} MiB) "
                "was exhausted"
            )
        return (
            f"MemoryError: the run's memory limit ({int(self.limit or 0) // _MIB} MiB) was reached"
        )


def as_nobody() -> None:
    """Switch the calling thread to the guest user ``nobody`` (saved uid/gid 0 kept)."""
    _raw(_SYS_SETRESGID, NOBODY, NOBODY, 0)
    _raw(_SYS_SETRESUID, NOBODY, NOBODY, 0)


def as_root() -> None:
    """Back to root (allowed: the saved uid is 0)."""
    _raw(_SYS_SETRESUID, 0, 0, 0)
    _raw(_SYS_SETRESGID, 0, 0, 0)


def _raw(number: int, *ids: int) -> None:
    if libc.syscall(number, *ids) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"set ids: {os.strerror(err)}")


#: The rlimits an exec'd command starts with: (limits key, resource name).
SPAWN_RLIMITS = (
    ("memory_bytes", "RLIMIT_DATA"),
    ("file_size_bytes", "RLIMIT_FSIZE"),
    ("pids", "RLIMIT_NPROC"),
)


class SpawnLimits:
    """The command's rlimits and user, on this init for the time of the spawn (vfork: the
    child starts with the init's soft limits and the calling thread's ids): :meth:`restore`
    gives the init its own back, :meth:`harden` makes them the command's hard limits."""

    def __init__(self, limits: dict) -> None:
        import resource

        self._resource = resource
        self._saved: list[tuple[int, tuple[int, int]]] = []
        self._values: list[tuple[int, int]] = []
        self._nobody = bool(limits.get("pids"))
        for key, name in SPAWN_RLIMITS:
            value = limits.get(key)
            if value:
                which = getattr(resource, name)
                old = resource.getrlimit(which)
                self._saved.append((which, old))
                self._values.append((which, int(value)))
                resource.setrlimit(which, (int(value), old[1]))
        if self._nobody:
            as_nobody()

    def restore(self) -> None:
        if self._nobody:
            as_root()
        for which, old in reversed(self._saved):
            self._resource.setrlimit(which, old)

    def harden(self, pid: int) -> None:
        """The command's limits as hard limits too (it cannot raise them back: as
        ``nobody`` it has no CAP_SYS_RESOURCE)."""
        for which, value in self._values:
            try:
                self._resource.prlimit(pid, which, (value, value))
            except (ProcessLookupError, PermissionError, OSError):
                pass  # gone already, or this kernel refused: the soft limit binds anyway


def limit_process_count(pids: int | None) -> bool:
    """An in-process run's ``pids``: RLIMIT_NPROC as ``nobody`` (this thread counts as one).
    True when applied (:func:`unlimit_process_count` undoes it)."""
    if not pids:
        return False
    import resource

    PRE["nproc"] = resource.getrlimit(resource.RLIMIT_NPROC)
    resource.setrlimit(resource.RLIMIT_NPROC, (int(pids), PRE["nproc"][1]))
    as_nobody()
    return True


def unlimit_process_count() -> None:
    import resource

    as_root()
    resource.setrlimit(resource.RLIMIT_NPROC, PRE.pop("nproc"))


def open_kmsg() -> int:
    """The kernel log, positioned at its end: :func:`oom_kills` reads what comes after."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(fd, 0, os.SEEK_END)
    return fd


def oom_kills(fd: int) -> list[str]:
    """The OOM killer's ``Killed process N (comm)`` lines since the last read."""
    found = []
    while True:
        try:
            record = os.read(fd, 8192)
        except BlockingIOError:
            break
        except BrokenPipeError:  # records overwritten since the last read: go on
            continue
        except OSError:
            break
        if not record:
            break
        text = record.decode("utf-8", "replace").partition(";")[2]
        at = text.find("Killed process ")
        if at >= 0:
            found.append(text[at:].split(" total-vm")[0].strip())
    return found
