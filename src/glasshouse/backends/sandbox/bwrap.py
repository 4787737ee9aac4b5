"""The ``sandbox`` backend: the workload runs under bubblewrap.

``bwrap`` with

- new user, pid, ipc, uts, mount, cgroup and (unless ``spec.network``) net namespaces; the
  net namespace has only its own ``lo``;
- a read-only ``/usr`` (plus the merged-/usr symlinks) and a minimal read-only ``/etc``
  (synthetic passwd/group/hosts, the loader cache, Python's site config, alternatives);
- a fresh per-run workspace (a host directory) as ``/workspace`` and cwd, a size-capped tmpfs
  as ``/tmp``, a private ``/proc`` (the host's boot command line and boot id hidden) and a
  minimal ``/dev``;
- an unprivileged identity on both sides: bwrap is started by a per-run host uid (when we are
  root), so the sandbox owns nothing on the host, and the command runs as uid 1000 inside;
- no capabilities, ``--die-with-parent``, ``--new-session`` (no TIOCSTI into our terminal) and a
  libseccomp deny-list filter (:mod:`glasshouse.backends._seccomp`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from glasshouse.backends import _seccomp
from glasshouse.backends.process import Command
from glasshouse.core.execution import BackendUnavailable, ExecutionResult, ExecutionSpec
from glasshouse.core.session import SessionSpec

from ._base import SandboxBase
from ._layout import (
    _DEFAULT_TMP_BYTES,
    _MERGED_USR,
    _OPTIONAL_MERGED_USR,
    HOSTNAME,
    INIT_PATH,
    INSIDE_GID,
    INSIDE_UID,
    INSIDE_WORKSPACE,
)
from ._run import SandboxRun, _has_status
from ._session import BwrapLiveSandbox

#: /proc files of the host's that bwrap's fresh /proc still shows: each is overlaid with an
#: empty read-only file (the host's boot command line, the id of its current boot).
_HIDDEN_PROC = ("/proc/cmdline", "/proc/sys/kernel/random/boot_id")


class SandboxBackend(SandboxBase):
    """Run the workload in a bubblewrap sandbox."""

    name = "sandbox"
    isolation = "namespaces"
    _exe = "bwrap"
    _package = "bubblewrap"

    def __init__(self, *, seccomp: bool = True, **options: Any) -> None:
        """Options as :class:`~glasshouse.backends.sandbox.SandboxBase`. ``seccomp=False``
        exists for measuring the filter's cost, not for use."""
        super().__init__(**options)
        self._use_seccomp = seccomp
        self._program: _seccomp.Program | None = None
        self._static_args: dict[bool, list[str]] = {}

    def _prepare_runtime(self) -> None:
        if self._use_seccomp:
            try:
                self._program = _seccomp.program()
            except _seccomp.SeccompUnavailable as exc:
                raise BackendUnavailable(f"seccomp filter: {exc}") from exc
        for net in (False, True):
            self._static_args[net] = self._bwrap_static(net)

    def _bwrap_static(self, network: bool) -> list[str]:
        args = [self._binary, "--unshare-user", "--unshare-pid", "--unshare-ipc"]
        args += ["--unshare-uts", "--unshare-cgroup"]
        if not network:
            args.append("--unshare-net")
        args += ["--uid", str(INSIDE_UID), "--gid", str(INSIDE_GID), "--hostname", HOSTNAME]
        args += ["--die-with-parent", "--new-session"]
        args += ["--ro-bind", "/usr", "/usr"]
        for target, link in _MERGED_USR + _OPTIONAL_MERGED_USR:
            if (Path("/") / target).is_dir():
                args += ["--symlink", target, link]
        args += ["--ro-bind", str(self._etc[network]), "/etc"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for hidden, fd in zip(_HIDDEN_PROC, _empty_sources(), strict=True):
            args += ["--perms", "0444", "--ro-bind-data", str(fd), hidden]
        if self._init is not None:
            args += ["--as-pid-1", "--ro-bind", str(self._init), INIT_PATH]
        return args

    def _open_run_fds(self, run: SandboxRun) -> None:
        if self._program is not None:
            run.seccomp_fd = _seccomp.program_fd(self._program)
        run.status_r, run.status_w = os.pipe()
        if self._init is not None and not run.no_init:
            run.init_r, run.init_w = os.pipe()

    def _runtime_command(
        self, spec: ExecutionSpec, run: SandboxRun, env: dict[str, str], cwd: str, network: bool
    ) -> Command:
        args = list(self._static_args[network])
        tmp_size = spec.limits.memory_bytes or _DEFAULT_TMP_BYTES
        args += ["--size", str(tmp_size), "--tmpfs", "/tmp"]
        args += ["--bind", str(run.workspace.path), INSIDE_WORKSPACE, "--chdir", cwd]
        args += ["--remount-ro", "/"]  # bwrap's root tmpfs; /tmp and the workspace stay rw
        pass_fds: tuple[int, ...] = (run.status_w, *_empty_sources(), *run.extra_fds)
        args += ["--json-status-fd", str(run.status_w)]
        if run.seccomp_fd >= 0:
            args += ["--seccomp", str(run.seccomp_fd)]
            pass_fds += (run.seccomp_fd,)
        args.append("--")
        if run.init_w >= 0:
            args += [INIT_PATH, str(run.init_w)]
            pass_fds += (run.init_w,)
        args += list(spec.argv)
        user = (run.host_uid, run.host_gid) if os.geteuid() == 0 else None
        return Command(
            self._binary,
            args,
            env,
            None,
            rlimits=self._rlimits(spec),
            pass_fds=pass_fds,
            user=user,
        )

    def _runtime_result(
        self, run: SandboxRun, result: ExecutionResult, facts: dict[str, Any]
    ) -> None:
        namespaces = ["user", "pid", "ipc", "uts", "mount", "cgroup"]
        if result.network != "enabled":
            namespaces.insert(2, "net")
        facts["namespaces"] = namespaces
        facts["uid"] = INSIDE_UID
        facts.update(self._seccomp_facts())
        docs = run.read_status(run.status_r)
        child = next((d["child-pid"] for d in docs if "child-pid" in d), None)
        if isinstance(child, int):
            # Host pid of the sandbox's pid 1 (bwrap's reaper); the command is its child,
            # pid 2 inside. An observer maps any host pid to its sandbox pid with the last
            # NSpid field of /proc/<pid>/status.
            facts["init_host_pid"] = child
            facts["command_ns_pid"] = 2
            info = next((d for d in docs if "child-pid" in d), {})
            for key in ("pid-namespace", "net-namespace", "mnt-namespace"):
                if isinstance(info.get(key), int):  # inode numbers, as in /proc/<pid>/ns/*
                    facts[key.replace("-", "_")] = info[key]
            facts["pid_mapping"] = (
                f"host {result.root_pid} = bwrap; host {child} = sandbox pid 1 (glasshouse-init); "
                "the command is sandbox pid 2; NSpid in /proc/<pid>/status maps the rest"
            )
        init_docs = run.read_status(run.init_r)
        started = _has_status(init_docs) if self._init is not None else isinstance(child, int)
        if not started and self._setup_failed(result, "bwrap:"):
            return
        self._apply_wait_status(init_docs, result)

    def _seccomp_facts(self) -> dict[str, Any]:
        if self._program is None:
            return {"seccomp": "disabled"}
        return {
            "seccomp": self._program.describe(),
            "seccomp_program": self._program.sha256,
            "seccomp_denied": list(self._program.denied),
        }

    # -- sessions (glasshouse.core.session.SessionCapable) ------------------------------
    def open_session(self, spec: SessionSpec) -> BwrapLiveSandbox:
        """A sandbox that lives across steps (see :mod:`._session`)."""
        return BwrapLiveSandbox(self, spec)


@functools.cache
def _empty_sources() -> tuple[int, ...]:
    """One fd per :data:`_HIDDEN_PROC` file that reads as empty forever (/dev/null,
    close-on-exec; a child inherits them only through ``pass_fds``): bwrap copies from each
    into the file it lays over that path (and closes its copy, hence one each). Opened once
    per process: the bwrap arguments are built once per backend."""
    return tuple(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in _HIDDEN_PROC)
