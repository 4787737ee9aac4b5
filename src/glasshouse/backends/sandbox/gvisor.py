"""The ``gvisor`` backend: the sandbox layout as an OCI bundle under gVisor's ``runsc``.

``runsc --platform=ptrace``: the workload talks to gVisor's user-space kernel (the sentry),
so the host sees (and host eBPF observes) only the sentry and gofer processes; the receipt
says so. Same workspace, /etc skeleton, limits and glasshouse-init as the bubblewrap backend.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from glasshouse.backends.process import Command, ProcessHandle
from glasshouse.core.execution import (
    BackendUnavailable,
    ExecutionResult,
    ExecutionSpec,
    WorkloadStart,
)

from ._base import SandboxBase
from ._layout import (
    _DEFAULT_PATH,
    _DEFAULT_TMP_BYTES,
    _GVISOR_STATUS_DIR,
    HOSTNAME,
    INIT_PATH,
    INSIDE_WORKSPACE,
)
from ._probe import probe_gvisor
from ._rootfs import _gvisor_rootfs
from ._run import SandboxRun, _has_status, _read_status_file

_GVISOR_TASKS_BASE = 256
_GVISOR_TASKS_PER_PROC = 32
_GVISOR_NOTE = (
    "gVisor runtime: the workload's syscalls are served by gVisor's user-space kernel; host "
    "observation (eBPF) sees only the runsc sentry/gofer processes, not the workload's own "
    "processes, files or connections"
)


def probe() -> tuple[bool, str]:
    """Can gVisor sandboxes run here? (ok, reason)."""
    return probe_gvisor()


class GVisorBackend(SandboxBase):
    """The sandbox layout under gVisor (``runsc --platform=ptrace``)."""

    name = "gvisor"
    isolation = "gvisor"
    _exe = "runsc"
    _package = "runsc"

    def _check_host(self) -> None:
        if os.geteuid() != 0:
            raise BackendUnavailable(probe_gvisor()[1])

    def _prepare_runtime(self) -> None:
        for net in (False, True):
            self._etc[net] = _gvisor_rootfs(self._base, self._etc[net])

    def _workload_start(self) -> WorkloadStart:
        return WorkloadStart("none")  # the host sees runsc, never the workload's processes

    def _runtime_command(
        self, spec: ExecutionSpec, run: SandboxRun, env: dict[str, str], cwd: str, network: bool
    ) -> Command:
        run_dir = run.workspace.path.with_name(run.workspace.path.name + "-runsc")
        bundle, state, status = run_dir / "bundle", run_dir / "state", run_dir / "status"
        bundle.mkdir(parents=True)
        state.mkdir()
        run.extra_dirs.append(run_dir)
        argv = list(spec.argv)
        if self._init is not None:
            # No fd reaches the container's PID 1 through runsc: glasshouse-init writes the
            # wait status to a file in a per-run directory only the run's uid can write.
            status.mkdir(mode=0o700)
            if os.geteuid() == 0:
                os.chown(status, run.host_uid, run.host_gid)
            argv = [INIT_PATH, f"{_GVISOR_STATUS_DIR}/status", *argv]
        config = _oci_config(spec, argv, env, cwd, run, self._etc[network], self._init, status)
        (bundle / "config.json").write_text(json.dumps(config))
        container_id = f"gh-{run.workspace.path.name}"
        args = [self._binary, "--root", str(state), "--platform=ptrace", "--ignore-cgroups"]
        args += [f"--network={'host' if network else 'none'}"]
        args += ["run", "--bundle", str(bundle), container_id]
        return Command(self._binary, args, {"PATH": _DEFAULT_PATH}, None, rlimits=[])

    def _after_fork(self, handle: ProcessHandle, command: Command) -> None:
        super()._after_fork(handle, command)
        cg = handle.cgroup
        if cg is not None and handle.spec.limits.pids is not None:
            # Inside gVisor, RLIMIT_NPROC enforces spec.pids. On the host the sentry and its
            # ptrace stubs are many tasks per guest process (measured: ~65 idle, ~20 more per
            # process), so the host pids.max is a proportional safety net, not the limit.
            host = _GVISOR_TASKS_BASE + _GVISOR_TASKS_PER_PROC * handle.spec.limits.pids
            cg.set_limits(None, host)

    def _runtime_result(
        self, run: SandboxRun, result: ExecutionResult, facts: dict[str, Any]
    ) -> None:
        status = next((d / "status" / "status" for d in run.extra_dirs), None)
        docs = _read_status_file(status)
        if self._init is None or _has_status(docs) or not self._setup_failed(result, ""):
            self._apply_wait_status(docs, result)
        facts["uid"] = run.host_uid
        facts["kernel"] = "gVisor sentry (user-space), platform ptrace"
        facts["observation"] = _GVISOR_NOTE
        result.details["observation_note"] = _GVISOR_NOTE
        result.scope["note"] = (
            "the workload's processes live in gVisor's sentry, whose pid namespace the host "
            "cannot see: the host observes runsc's processes in the run's cgroup"
        )


def _oci_config(
    spec: ExecutionSpec,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    run: SandboxRun,
    rootfs: Path,
    init: Path | None,
    status: Path,
) -> dict[str, Any]:
    tmp_size = spec.limits.memory_bytes or _DEFAULT_TMP_BYTES
    rlimits = [{"type": "RLIMIT_CORE", "hard": 0, "soft": 0}]
    if spec.limits.cpu_s is not None:
        soft = max(1, int(spec.limits.cpu_s + 0.999))
        rlimits.append({"type": "RLIMIT_CPU", "hard": soft + 1, "soft": soft})
    if spec.limits.file_size_bytes is not None:
        n = spec.limits.file_size_bytes
        rlimits.append({"type": "RLIMIT_FSIZE", "hard": n, "soft": n})
    if spec.limits.pids is not None:  # gVisor's own kernel counts the sandbox's processes
        n = spec.limits.pids
        rlimits.append({"type": "RLIMIT_NPROC", "hard": n, "soft": n})
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if not spec.network:
        namespaces.append({"type": "network"})
    ro = ["rbind", "ro", "nosuid", "nodev"]
    extra_mounts = []
    if init is not None:
        extra_mounts = [
            {"destination": INIT_PATH, "type": "bind", "source": str(init), "options": ro},
            {
                "destination": _GVISOR_STATUS_DIR,
                "type": "bind",
                "source": str(status),
                "options": ["rbind", "rw", "nosuid", "nodev", "noexec"],
            },
        ]
    return {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": False,
            "user": {"uid": run.host_uid, "gid": run.host_gid},
            "args": argv,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": cwd,
            "capabilities": {k: [] for k in ("bounding", "effective", "permitted", "inheritable")},
            "rlimits": rlimits,
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": HOSTNAME,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ro},
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", f"size={tmp_size}"],
            },
            {
                "destination": INSIDE_WORKSPACE,
                "type": "bind",
                "source": str(run.workspace.path),
                "options": ["rbind", "rw", "nosuid", "nodev"],
            },
            *extra_mounts,
        ],
        "linux": {"namespaces": namespaces},
    }
