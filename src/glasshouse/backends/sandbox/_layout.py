"""Where things are inside a sandbox, and how a path inside maps to the host."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from glasshouse.core.execution import (
    CommandNotRunnable,
    ExecutionSpec,
)

#: Where the command runs inside the sandbox (the per-run workspace).
INSIDE_WORKSPACE = "/workspace"


#: Where glasshouse-init (the sandbox's PID 1) is mounted inside.
INIT_PATH = "/.glasshouse-init"
#: gVisor: where glasshouse-init writes the wait status (a per-run directory).
_GVISOR_STATUS_DIR = "/.glasshouse-status"


#: uid/gid of the command inside a bubblewrap sandbox.
INSIDE_UID = 1000


INSIDE_GID = 1000


HOSTNAME = "glasshouse"


#: Size cap of the /tmp tmpfs when the spec sets no memory limit (its pages are charged to
#: the run's memory cgroup either way).
_DEFAULT_TMP_BYTES = 256 << 20


_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


_MERGED_USR = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"))


_OPTIONAL_MERGED_USR = (("usr/lib64", "/lib64"), ("usr/lib32", "/lib32"))


def _default_base() -> Path:
    env = os.environ.get("GLASSHOUSE_SANDBOX_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/glasshouse/sandbox")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(runtime) / f"glasshouse-sandbox-{os.geteuid()}"


def _sandbox_env(spec: ExecutionSpec) -> dict[str, str]:
    """The command's environment: the spec's as given, else a minimal one (never the host's)."""
    if spec.env is not None:
        return dict(spec.env)
    return {
        "PATH": _DEFAULT_PATH,
        "HOME": INSIDE_WORKSPACE,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
    }


def _inside_cwd(cwd: str | None) -> str:
    if not cwd:
        return INSIDE_WORKSPACE
    path = os.path.normpath(cwd if cwd.startswith("/") else f"{INSIDE_WORKSPACE}/{cwd}")
    return path


def _host_view(inside: str, workspace: Path) -> Path | None:
    """Where a path inside the sandbox lives on the host, for the parts we map 1:1."""
    path = os.path.normpath(inside)
    if path == INSIDE_WORKSPACE or path.startswith(INSIDE_WORKSPACE + "/"):
        return workspace / path[len(INSIDE_WORKSPACE) + 1 :]
    if path.startswith("/usr/"):
        return Path(path)
    for target, link in _MERGED_USR + _OPTIONAL_MERGED_USR:
        if path.startswith(link + "/"):
            return Path("/") / target / path[len(link) + 1 :]
    return None


def _check_runnable(name: str, path: str, cwd: str, workspace: Path) -> None:
    """Raise CommandNotRunnable (127/126) for a command the sandbox cannot exec.

    Checked against the sandbox's view (workspace, /usr) rather than letting bwrap fail, so
    "not found" is exit 127 with a clear message, as in a shell.
    """
    if "/" in name:
        inside = name if name.startswith("/") else f"{cwd}/{name}"
        host = _host_view(inside, workspace)
        if host is None or not host.exists():
            raise CommandNotRunnable(f"{name}: no such file or directory in the sandbox", 127)
        if host.is_dir() or not os.access(host, os.X_OK):
            raise CommandNotRunnable(f"{name}: permission denied (not executable)", 126)
        return
    for entry in path.split(":"):
        host = _host_view(f"{entry or cwd}/{name}", workspace)
        if host is not None and host.is_file() and os.access(host, os.X_OK):
            return
    raise CommandNotRunnable(f"{name}: command not found in the sandbox", 127)
