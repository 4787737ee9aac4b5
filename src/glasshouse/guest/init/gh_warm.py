"""Warm-up before the snapshot (the snapshot boot only): import what user code commonly
needs, restart with glibc's malloc, pre-fault the heap, the stream files and every page of
the interpreter's code, run the compiler once, and open what every run needs. A restored
guest then starts with all of it in memory: on kvm_pvm every page fault and syscall after
restore runs in the emulated guest kernel. Only built-in modules at import."""

from __future__ import annotations

import ctypes
import os
import sys

from gh_runners import open_io, stdio
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


#: Heap pre-faulted before the snapshot (see prefault).
PREFAULT_BYTES = 24 << 20
#: tmpfs pages reserved for each captured stream before the snapshot.
_STREAM_RESERVE = 256 << 10
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_FALLOC_FL_KEEP_SIZE = 1


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


def prefault() -> None:
    """Grow glibc's heap by PREFAULT_BYTES, touch every page and keep it (no trimming, no
    mmap for big blocks), and reserve tmpfs pages for stdout/stderr: a restored run then
    allocates from memory the snapshot already holds instead of faulting in fresh pages
    through the emulated guest kernel. Costs a few seconds once, at the snapshot boot."""
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum: big blocks stay on the heap
    libc.mallopt(_M_TOP_PAD, 1 << 20)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    block = libc.malloc(PREFAULT_BYTES)
    if block:
        ctypes.memset(block, 0, PREFAULT_BYTES)
        libc.free(block)
    for fd in PRE["fds"][1:]:
        libc.fallocate(fd, _FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(_STREAM_RESERVE))
    _prefault_files()
    _warm_compiler()


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
    stdio(PRE["fds"])
    os.chdir("/work")
    PRE["cwd"] = "/work"
    # Move every object alive now out of the collector's reach: a collection after restore
    # would otherwise walk (touch) the whole warm heap, and every page a restored guest
    # touches costs a fault on the host.
    import gc

    gc.collect()
    gc.freeze()
