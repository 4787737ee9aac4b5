"""Warm-up before the snapshot (the snapshot boot only): import what user code commonly
needs, restart with glibc's malloc, pre-fault a large heap (huge pages where the kernel has
them), the stream files and every page of the interpreter's code, run the compiler once,
and open what every run needs. A restored guest then starts with all of it in memory: on
kvm_pvm every page fault and syscall after restore runs in the emulated guest kernel.
Only built-in modules at import."""

from __future__ import annotations

import _thread
import ctypes
import os
import sys

from gh_limits import guest_room, heap_free, limit_workspace, open_kmsg
from gh_runners import open_io, stdio
from gh_stream import OutputPump
from gh_system import PRE, console, libc

# Modules user code commonly imports: loaded before the snapshot so a restored run does not
# pay for reading them through the (emulated) guest kernel.
WARM_MODULES = (
    "json",
    "base64",
    "hashlib",
    "hmac",
    "random",
    "math",
    "statistics",
    "decimal",
    "fractions",
    "re",
    "collections",
    "itertools",
    "functools",
    "datetime",
    "time",
    "string",
    "textwrap",
    "struct",
    "io",
    "csv",
    "copy",
    "dataclasses",
    "enum",
    "typing",
    "pathlib",
    "tempfile",
    "shutil",
    "subprocess",
    "traceback",
    "heapq",
    "bisect",
    "operator",
    "secrets",
    "uuid",
    "urllib.parse",
    "zlib",
    "gzip",
    "pprint",
    "contextlib",
    "abc",
    "numbers",
    "array",
    "resource",
    "builtins",
)


def import_common() -> None:
    """Import what user code commonly needs. Only for the snapshot boot: a cold boot that
    runs one command would pay for imports it may not use."""
    for name in WARM_MODULES:
        try:
            __import__(name)
        except ImportError:
            pass


#: Share of the guest's RAM pre-faulted as heap before the snapshot (see prefault): what an
#: in-process run can allocate without faulting in a single fresh page.
HEAP_SHARE = 0.5
#: Stack size of the threads an in-process run starts (see preopen).
THREAD_STACK = 1 << 20
#: tmpfs pages reserved for each captured stream before the snapshot.
_STREAM_RESERVE = 256 << 10
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
_FALLOC_FL_KEEP_SIZE = 1
_MADV_HUGEPAGE, _MADV_POPULATE_WRITE = 14, 23
_HUGE = 2 << 20
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def reexec_with_malloc() -> None:
    """Snapshot boot only: restart this init with ``PYTHONMALLOC=malloc`` so Python's
    objects come from glibc's heap, which prefault() grows and touches before the
    snapshot. On kvm_pvm a page the guest touches for the first time costs ~2 ms (the
    guest kernel's page-fault path and the page zeroing run in the instruction emulator):
    pymalloc's fresh 1 MiB arenas made a ``print(2+2)`` after restore pay for dozens.
    ``-P -s -S`` keep what ``-I -S`` gave (no script directory or user site on sys.path);
    the environment is the kernel's, which we control."""
    if os.environ.get("PYTHONMALLOC") == "malloc":
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONMALLOC"] = "malloc"
    exe = sys.executable or "/usr/bin/python3"
    try:
        os.execve(exe, [exe, "-P", "-s", "-S", os.path.abspath(sys.argv[0])], env)
    except OSError as exc:  # keep going with pymalloc: slower, still correct
        console(f"gh: re-exec with PYTHONMALLOC=malloc failed: {exc}".encode())


def heap_bytes() -> int:
    """The heap to pre-fault: HEAP_SHARE of the guest's RAM, in whole huge pages."""
    with open("/proc/meminfo", "rb") as f:
        total_kib = int(f.readline().split()[1])
    return int(total_kib * 1024 * HEAP_SHARE) // _HUGE * _HUGE


def prefault() -> None:
    """Make glibc keep every block on its heap (no ``mmap`` for big blocks, no trimming),
    grow the heap by heap_bytes(), fault every page in and keep it; reserve tmpfs pages for
    stdout/stderr. A restored run then allocates from memory the snapshot already holds
    (even a 200 MiB bytearray) instead of faulting in fresh pages through the emulated
    guest kernel. Where the kernel has transparent huge pages the heap is faulted in as
    2 MiB pages: fewer faults here, and a fork of this process copies one entry per 2 MiB
    instead of 512. Costs a minute or two once, at the snapshot boot."""
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    libc.mallopt(_M_MMAP_MAX, 0)  # every block on the heap, however big
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TOP_PAD, 1 << 20)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    size = heap_bytes()
    block = libc.malloc(ctypes.c_size_t(size))
    if block:
        huge = _huge_pages_on()
        lo, hi = -(-block // _HUGE) * _HUGE, (block + size) // _HUGE * _HUGE
        if huge and hi > lo:
            libc.madvise(lo, hi - lo, _MADV_HUGEPAGE)
        start = block // 4096 * 4096
        if libc.madvise(start, block + size - start, _MADV_POPULATE_WRITE) != 0:
            ctypes.memset(block, 0, size)  # (a kernel without MADV_POPULATE_WRITE)
        libc.free(block)
        if huge:
            _huge_pages_off()
    for fd in PRE["fds"][1:]:
        libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(_STREAM_RESERVE))
    _prefault_files()
    _warm_page_cache()
    _warm_compiler()


#: Files read into the guest's page cache before the snapshot (see _warm_page_cache).
_CACHED_TREES = ("/usr/lib/python3.11", "/usr/lib/x86_64-linux-gnu")
_PROT_READ, _MAP_PRIVATE = 1, 2


def _cached(name: str) -> bool:
    # compiled modules (not the -O variants, which nothing loads) and shared objects
    return name.endswith((".cpython-311.pyc", ".so")) or ".so." in name


def _warm_page_cache() -> None:
    """Fault every page of the standard library's compiled modules, its extension modules
    and the shared libraries into the guest's page cache: an ``import`` after restore then
    reads from memory the snapshot holds instead of from the virtio disk through the
    emulated guest kernel (a page at a time, each a fresh page cache page). Mapped, not
    read: a read would also copy every page once more."""
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    for tree in _CACHED_TREES:
        for dirpath, _, names in os.walk(tree):
            for name in names:
                if _cached(name):
                    _fault_in(os.path.join(dirpath, name))


def _fault_in(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        size = os.fstat(fd).st_size
        if size <= 0:
            return
        addr = libc.mmap(None, size, _PROT_READ, _MAP_PRIVATE, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return
        for offset in range(0, size, 4096):
            ctypes.string_at(addr + offset, 1)
        libc.munmap(addr, size)
    finally:
        os.close(fd)


def _huge_pages_on() -> bool:
    """Transparent huge pages for the heap ("madvise" mode). The kernel turns them off by
    default in a guest under 512 MiB of RAM (ours is just under, after the kernel's own);
    the switch is ours to flip. False where the kernel has none."""
    try:
        with open(_THP, "wb") as f:
            f.write(b"madvise")
        return True
    except OSError:
        return False


def _huge_pages_off() -> None:
    """No new huge pages after the heap's (those stay mapped): khugepaged and kcompactd
    then never wake on their own, and a restored VM idles without kernel timers."""
    for path, value in ((_THP, b"never"), ("/proc/sys/vm/compaction_proactiveness", b"0")):
        try:
            with open(path, "wb") as f:
                f.write(value)
        except OSError:
            pass


def _prefault_files() -> None:
    """Touch every page of every readable file mapping (the interpreter, libc, the
    extension modules): code never run before the snapshot, such as the compiler that
    ``python3 -c`` needs, would otherwise be read from the virtio disk and faulted in page
    by page through the emulated guest kernel after each restore."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split()
        # Only the read-only image's files (always whole pages, never truncated: no SIGBUS).
        if len(parts) != 6 or not parts[5].startswith(("/usr/", "/lib")) or parts[1][0] != "r":
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        for addr in range(start, end, 4096):
            try:
                ctypes.string_at(addr, 1)
            except (OSError, ValueError):
                break


_WARM_CODE = """
import sys
class _C:
    def __init__(self, v): self.v = v
def f(*a, k=1, **kw):
    try:
        return [x * 2 for x in a if x] + list({k: v for k, v in kw.items()}.values())
    except (ValueError, TypeError) as e:
        raise RuntimeError(f"{e!r}") from e
    finally:
        pass
r = f(1, 2, k=3, z=4) + [_C(i).v for i in range(3)] + sorted({1, 2}) + [lambda: 0]
print("warm", 2 + 2, 3.5 / 2, repr(r)[:10], b"x".hex(), file=OUT)
try:
    1 / 0
except ZeroDivisionError:
    import traceback; traceback.print_exc(file=OUT)
"""


def _warm_compiler() -> None:
    """Run the parser, compiler, eval loop, print and traceback paths once before the
    snapshot (imports load .pyc files and never compile), into a throwaway buffer."""
    import io

    out = io.StringIO()
    exec(compile(_WARM_CODE, "<string>", "exec"), {"__name__": "__warm__", "OUT": out})


def preopen() -> None:
    """Everything a run needs that does not depend on the request, done before the
    snapshot: each syscall after restore runs through the emulated kernel on kvm_pvm."""
    PRE["console"] = os.dup(2)
    PRE["release"] = os.uname().release
    PRE["fds"] = open_io()
    PRE["urandom"] = os.open("/dev/urandom", os.O_WRONLY)
    PRE["kmsg"] = open_kmsg()
    PRE["pump"] = OutputPump(PRE["fds"])
    # Threads the user's code starts get 1 MiB stacks, not 8: an in-process run's memory
    # cap (RLIMIT_DATA) counts a stack's whole size, touched or not.
    _thread.stack_size(THREAD_STACK)
    stdio(PRE["fds"])
    os.chdir("/work")
    PRE["cwd"] = "/work"
    # Move every object alive now out of the collector's reach: a collection after restore
    # would otherwise walk (touch) the whole warm heap, and every page a restored guest
    # touches costs a fault on the host.
    import gc

    gc.collect()
    gc.freeze()


def measure_room() -> None:
    """Last before the snapshot: what this process maps, what the guest can still give and
    what glibc's heap has free (the in-process runs' memory cap starts from them; the same
    in every restored VM, but for the request's own data). The
    tmpfs mounts (/work, /tmp) get that as their size: writing them full gets ENOSPC, not
    a guest out of memory (whose OOM killer cannot free tmpfs pages, and never kills the
    init: the guest would panic)."""
    PRE.pop("room", None)
    PRE["room"] = guest_room()
    PRE["heap"] = heap_free()
    import resource

    PRE["rlimit_data"] = resource.getrlimit(resource.RLIMIT_DATA)
    for mount in ("/work", "/tmp"):
        try:
            limit_workspace(PRE["room"][1], mount)
        except OSError as exc:
            console(f"gh: cannot size {mount}: {exc}".encode())
