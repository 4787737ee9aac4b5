"""Can sandboxes run here? Fast cached probes for ``auto`` and real ones for ``doctor``."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

from glasshouse.backends import _seccomp
from glasshouse.core.checks import Check
from glasshouse.core.execution import BackendUnavailable

from ._init import InitUnavailable, build_init
from ._layout import _MERGED_USR, _OPTIONAL_MERGED_USR

_probe_cache: dict[str, tuple[bool, str]] = {}


def probe() -> tuple[bool, str]:
    """Can bubblewrap sandboxes run here? (ok, reason). Fast static checks, cached per process
    (backend auto-selection calls it on every CLI run); ``doctor`` starts a real sandbox."""
    if "bwrap" not in _probe_cache:
        _probe_cache["bwrap"] = _static_probe()
    return _probe_cache["bwrap"]


def _static_probe() -> tuple[bool, str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False, "bwrap not found (apt install bubblewrap)"
    if os.stat(bwrap).st_mode & stat.S_ISUID:
        return False, f"{bwrap} is setuid: use the distribution's non-setuid bubblewrap"
    for knob, bad in (
        ("/proc/sys/user/max_user_namespaces", "0"),
        ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1"),
    ):
        with contextlib.suppress(OSError):
            if Path(knob).read_text().strip() == bad:
                return False, f"unprivileged user namespaces are disabled ({knob} = {bad})"
    ok, why = _userns_allowed()
    if not ok:
        return False, why
    try:
        _seccomp.program()
    except _seccomp.SeccompUnavailable as exc:
        return False, f"seccomp: {exc}"
    return True, f"{bwrap}, user namespaces can be created, libseccomp loads"


def _userns_allowed() -> tuple[bool, str]:
    """Try ``unshare(CLONE_NEWUSER)`` in a throw-away child. The sysctl knobs above are not the
    whole story: the kernel also refuses it inside a chroot, under some LSMs and seccomp
    profiles (containers), which only an attempt reveals. About a millisecond, once."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only tries and exits
        rc = libc.unshare(0x10000000)  # CLONE_NEWUSER
        os._exit(0 if rc == 0 else (ctypes.get_errno() or 1) & 0xFF)
    _, status = os.waitpid(pid, 0)
    err = os.waitstatus_to_exitcode(status)
    if err == 0:
        return True, ""
    hint = ""
    with contextlib.suppress(OSError):
        if os.stat("/").st_ino != os.stat("/proc/1/root/.").st_ino:
            hint = " (this process is in a chroot, where the kernel forbids it)"
    return False, f"cannot create a user namespace: {os.strerror(err)}{hint}"


def probe_gvisor() -> tuple[bool, str]:
    """Can gVisor sandboxes run here? (ok, reason)."""
    if shutil.which("runsc") is None:
        return False, "runsc not found (apt install runsc)"
    if os.geteuid() != 0:
        return False, "the gvisor backend runs runsc as root (rootless runsc is not supported)"
    ok, why = _userns_allowed()  # runsc puts its sandbox in a new user namespace too
    if not ok:
        return False, why
    return True, "runsc found, running as root"


def doctor_checks() -> list[Check]:
    """Probe bwrap, user namespaces, seccomp and runsc by actually using them (briefly)."""
    from glasshouse.doctor import Check

    checks: list[Check] = []
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        checks.append(
            Check("bubblewrap", False, "bwrap not found (apt install bubblewrap)", "sandbox")
        )
    else:
        checks.append(Check("bubblewrap", True, f"{bwrap} ({_tool_version(bwrap)})"))
        ok, detail = _probe_userns(bwrap)
        checks.append(Check("user namespaces", ok, detail, "" if ok else "sandbox"))
    try:
        prog = _seccomp.program()
        checks.append(Check("seccomp", True, prog.describe()))
    except _seccomp.SeccompUnavailable as exc:
        checks.append(Check("seccomp", False, str(exc), "sandbox"))
    try:
        checks.append(Check("sandbox init", True, str(build_init())))
    except InitUnavailable as exc:
        detail = f"{exc} (sandboxes still run; a signal death reads as exit 128+N)"
        checks.append(Check("sandbox init", False, detail, "exact signal reporting"))
    runsc = shutil.which("runsc")
    if runsc is None:
        checks.append(Check("runsc", False, "runsc not found (apt install runsc)", "gvisor"))
    else:
        ok, why = probe_gvisor()
        detail = f"{runsc} ({_tool_version(runsc)}, platform ptrace)" if ok else why
        checks.append(Check("runsc", ok, detail, "" if ok else "gvisor"))
    return checks


def _probe_userns(bwrap: str) -> tuple[bool, str]:
    """Start one minimal unprivileged sandbox (as nobody when root, as we run it)."""
    argv = [bwrap, "--unshare-all", "--ro-bind", "/usr", "/usr"]
    for target, link in _MERGED_USR + _OPTIONAL_MERGED_USR:
        if (Path("/") / target).is_dir():
            argv += ["--symlink", target, link]
    argv += ["--", "/usr/bin/true"]
    user: tuple[int, int] | None = (65534, 65534) if os.geteuid() == 0 else None

    def demote() -> None:  # pragma: no cover - runs in the child
        if user is not None:
            os.setgroups([])
            os.setresgid(user[1], user[1], user[1])
            os.setresuid(user[0], user[0], user[0])

    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, preexec_fn=demote, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap probe failed: {exc}"
    if out.returncode != 0:
        why = out.stderr.strip() or f"exit {out.returncode}"
        return False, f"unprivileged bwrap failed: {why}"
    return True, "an unprivileged bwrap sandbox (user, pid, net... namespaces) started"


def _tool_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"{binary} --version failed: {exc}") from exc
    first = (out.stdout or out.stderr).strip().splitlines()
    name = Path(binary).name
    text = first[0].strip() if first else name
    if name == "runsc":
        return "gvisor " + text.removeprefix("runsc version ").strip()
    return text
