"""The sandbox's seccomp filter, built with libseccomp and handed to bubblewrap as BPF.

Why a ctypes binding of ``libseccomp.so.2`` rather than Debian's ``python3-seccomp``: our
venv is made from /usr/bin/python3 *without* system site packages, and exposing the whole of
/usr/lib/python3/dist-packages to it to reach one module would leak every Debian Python
package into the venv. PyPI has no maintained binding (``pyseccomp`` is itself a ctypes
wrapper with no release since 2021), and exporting the program at setup time would need a
second code path for hosts where setup did not run. libseccomp's C ABI (soname 2, stable
since 2013) is small: we call six functions of it, so the library still resolves syscall
numbers per architecture, orders and optimises the rules and emits the BPF program; nothing
here assembles BPF by hand. The test suite checks the program is byte-identical to what
Debian's python3-seccomp binding produces for the same rules.

The program is built once per process (:func:`program`) and each run gets its own memfd
holding it (:func:`program_fd`), which bubblewrap reads with ``--seccomp FD``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import hashlib
import os
import platform
from dataclasses import dataclass

#: Syscalls sandboxed code never needs: denied with EPERM. Grouped by why.
DENIED: dict[str, tuple[str, ...]] = {
    "debugging other processes": (
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "kcmp",
        "pidfd_getfd",
    ),
    "mounting": (
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "mount_setattr",
    ),
    "namespaces": ("unshare", "setns"),
    "kernel attack surface": (
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "open_by_handle_at",
        "name_to_handle_at",
        "lookup_dcookie",
    ),
    "kernel keyring": ("keyctl", "add_key", "request_key"),
    "kernel and modules": (
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "quotactl",
        "syslog",
    ),
    "host clock and I/O ports": (
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "iopl",
        "ioperm",
    ),
}

#: clone(2) flags that create namespaces; a clone carrying any of them gets EPERM.
CLONE_NS_FLAGS: dict[str, int] = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

#: clone3 takes its flags in a struct seccomp cannot inspect: ENOSYS makes libc fall back
#: to clone(2), whose flags the filter does check (what Docker and Flatpak do too).
ENOSYS_SYSCALLS = ("clone3",)

SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_MASKED_EQ = 7


def scmp_act_errno(err: int) -> int:
    """libseccomp's SCMP_ACT_ERRNO(x) macro: fail the syscall with errno ``err``."""
    return 0x00050000 | (err & 0xFFFF)


class SeccompUnavailable(Exception):
    """libseccomp cannot be loaded or rejected a rule; the message says which."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@functools.cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp not found ({exc}); install libseccomp2") from exc
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.restype = None
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_version.argtypes = []
    lib.seccomp_version.restype = ctypes.c_void_p
    return lib


def library_version() -> str:
    """libseccomp's version, e.g. ``2.5.4``."""
    ptr = _lib().seccomp_version()
    major, minor, micro = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint * 3)).contents
    return f"{major}.{minor}.{micro}"


@dataclass(frozen=True)
class Program:
    """A compiled filter: the BPF bytes and what they deny (for the receipt)."""

    bpf: bytes
    denied: tuple[str, ...]
    skipped: tuple[str, ...]  # names this architecture/libseccomp does not know
    sha256: str

    def describe(self) -> str:
        return (
            f"libseccomp {library_version()} deny-list: {len(self.denied)} syscalls EPERM, "
            f"namespace clone flags EPERM, clone3 ENOSYS, foreign arch killed"
        )


def _rule(ctx: int, action: int, nr: int, args: list[_ArgCmp]) -> None:
    arr = (_ArgCmp * len(args))(*args) if args else None
    rc = _lib().seccomp_rule_add_array(ctx, action, nr, len(args), arr)
    if rc < 0:
        raise SeccompUnavailable(f"seccomp_rule_add(nr {nr}) failed: {os.strerror(-rc)}")


def _build() -> Program:
    lib = _lib()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    denied: list[str] = []
    skipped: list[str] = []
    try:
        eperm = scmp_act_errno(errno.EPERM)
        for names in DENIED.values():
            for name in names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr < 0:
                    skipped.append(name)
                    continue
                _rule(ctx, eperm, nr, [])
                denied.append(name)
        clone = lib.seccomp_syscall_resolve_name(b"clone")
        for flag in CLONE_NS_FLAGS.values():
            _rule(ctx, eperm, clone, [_ArgCmp(0, _SCMP_CMP_MASKED_EQ, flag, flag)])
        for name in ENOSYS_SYSCALLS:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                skipped.append(name)
                continue
            _rule(ctx, scmp_act_errno(errno.ENOSYS), nr, [])
        fd = os.memfd_create("glasshouse-seccomp-export", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_CUR)
            bpf = os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
    if not bpf or len(bpf) % 8:
        raise SeccompUnavailable(f"libseccomp produced a malformed program ({len(bpf)} bytes)")
    return Program(bpf, tuple(denied), tuple(skipped), "sha256:" + hashlib.sha256(bpf).hexdigest())


@functools.cache
def program() -> Program:
    """The filter for this host's architecture, compiled once per process."""
    if platform.system() != "Linux":
        raise SeccompUnavailable("seccomp needs Linux")
    return _build()


def program_fd(prog: Program | None = None) -> int:
    """A fresh fd (positioned at 0) holding the compiled program, for ``bwrap --seccomp``.

    A memfd per run: bubblewrap reads its fd to EOF, so runs cannot share one description.
    The fd is close-on-exec; the caller marks it inheritable for the one child that needs it.
    """
    prog = prog or program()
    fd = os.memfd_create("glasshouse-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, prog.bpf)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd
