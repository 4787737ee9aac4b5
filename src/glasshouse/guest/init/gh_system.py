"""The guest machine as PID 1 sees it: libc, the console, the mounts, the kernel command
line, and ``PRE``, what was opened before the snapshot (shared by the other init modules).

Only built-in modules here: this is imported at start-up, before the warm-up."""

from __future__ import annotations

import _socket
import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)

#: Opened before the snapshot, so a restored run makes fewer (emulated) syscalls:
#: ``console``, ``release``, ``fds``, ``urandom``, ``stdio``, ``cwd``; and run state:
#: ``woken`` (monotonic time of the wake line), ``primed``.
PRE: dict = {}


def console(line: bytes) -> None:
    try:
        os.write(PRE.get("console", 2), line + b"\n")
    except OSError:
        pass


def _mount(src: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    os.makedirs(target, exist_ok=True)
    if libc.mount(src.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        if err != 16:  # EBUSY: already mounted
            raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def setup() -> None:
    nosuid_nodev = 2 | 4
    _mount("proc", "/proc", "proc", nosuid_nodev | 8)
    _mount("sysfs", "/sys", "sysfs", nosuid_nodev | 8)
    _mount("devtmpfs", "/dev", "devtmpfs", 2)
    _mount("tmpfs", "/tmp", "tmpfs", nosuid_nodev, "mode=1777")
    _mount("tmpfs", "/work", "tmpfs", nosuid_nodev, "mode=0777")
    _mount("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755")
    _socket.sethostname("glasshouse")


def uptime() -> str:
    try:
        with open("/proc/uptime") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def cmdline_options(words: list[str]) -> dict[str, str]:
    """The ``gh.*=value`` words of a kernel command line."""
    return dict(w.split("=", 1) for w in words if w.startswith("gh.") and "=" in w)


def cmdline() -> dict[str, str]:
    try:
        with open("/proc/cmdline") as f:
            words = f.read().split()
    except OSError:
        words = []
    return cmdline_options(words)


def power_off() -> None:
    """Reboot (RB_AUTOBOOT): with ``reboot=k`` the VMM sees the reset and exits."""
    libc.reboot(0x01234567)
