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
import threading
from pathlib import Path
from typing import Any

from glasshouse.backends import _seccomp
from glasshouse.backends._quota import QuotaUnavailable
from glasshouse.backends.process import Command
from glasshouse.core.execution import (
    BackendError,
    BackendUnavailable,
    ExecutionResult,
    ExecutionSpec,
    Handle,
    Sink,
)
from glasshouse.core.session import SessionSpec

from . import _oneshot
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
from ._session import BwrapLiveSandbox, StepHandle

#: /proc files of the host's that bwrap's fresh /proc still shows: each is overlaid with an
#: empty read-only file (the host's boot command line, the id of its current boot).
_HIDDEN_PROC = ("/proc/cmdline", "/proc/sys/kernel/random/boot_id")


class SandboxBackend(SandboxBase):
    """Run the workload in a bubblewrap sandbox."""

    name = "sandbox"
    isolation = "namespaces"
    _exe = "bwrap"
    _package = "bubblewrap"

    def __init__(self, *, seccomp: bool = True, live_slots: bool = False, **options: Any) -> None:
        """Options as :class:`~glasshouse.backends.sandbox.SandboxBase`. ``seccomp=False``
        exists for measuring the filter's cost, not for use. ``live_slots``: the warm pool's
        slots are live sandboxes with an interpreter up (:mod:`._oneshot`)."""
        super().__init__(**options)
        self._live_slots = live_slots
        self._teardowns: list[threading.Thread] = []
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

    # -- the warm pool's live slots (._oneshot) -----------------------------------------
    def prewarm(self) -> Any:
        if not self._live_slots:
            return super().prewarm()
        box = BwrapLiveSandbox(self, _oneshot.slot_spec())
        try:
            box.interp()  # the interpreter up and ready: what the slot is for
        except BaseException:
            box.close()
            raise
        return box

    def start_prewarmed(
        self, slot: Any, spec: ExecutionSpec, stdout: Sink | None = None, stderr: Sink | None = None
    ) -> Handle:
        if not isinstance(slot, BwrapLiveSandbox):
            return super().start_prewarmed(slot, spec, stdout, stderr)
        why = _oneshot.unfit(spec)
        if why is None:
            try:
                return _oneshot.start(slot, spec, stdout, stderr)
            except (BackendError, OSError, QuotaUnavailable) as exc:
                why = f"the warm slot failed: {exc}"
        self._close_later(slot)
        return self.start(spec, stdout, stderr)

    def discard(self, slot: Any) -> None:
        if isinstance(slot, BwrapLiveSandbox):
            slot.close()
        else:
            super().discard(slot)

    def release(self, handle: Handle) -> None:
        if isinstance(handle, StepHandle) and handle.steps is not None:
            handle.steps.release(handle)
        else:
            super().release(handle)

    def wait(self, handle: Handle) -> ExecutionResult:
        if not (isinstance(handle, StepHandle) and handle.steps is not None):
            return super().wait(handle)
        result = handle.steps.wait(handle)
        result.details.pop("interpreter_restarted", None)
        result.details.pop("step_kind", None)
        if handle.spec.outputs:
            box = handle.steps.box
            result.outputs, status = box.collect_outputs(
                list(handle.spec.outputs), self._output_cap
            )
            result.output_status.update(status)
            result.sandbox["outputs"] = [f"{k}: {v}" for k, v in status.items()]
        return result

    def kill(self, handle: Handle, reason: str = "killed") -> None:
        if isinstance(handle, StepHandle) and handle.steps is not None:
            handle.steps.kill(handle, reason)
        else:
            super().kill(handle, reason)

    def cleanup(self, handle: Handle) -> None:
        if not (isinstance(handle, StepHandle) and handle.steps is not None):
            super().cleanup(handle)
            return
        handle.steps.cleanup(handle)
        self._close_later(handle.steps.box)

    def _close_later(self, box: BwrapLiveSandbox) -> None:
        """Close a used slot off the run's clock (``close()`` waits for all of them)."""
        thread = threading.Thread(target=box.close, name="glasshouse-slot-close", daemon=True)
        thread.start()
        with self._lock:
            self._teardowns = [t for t in self._teardowns if t.is_alive()] + [thread]

    def close(self) -> None:
        """Wait for the used slots' teardown."""
        with self._lock:
            pending, self._teardowns = self._teardowns, []
        for thread in pending:
            thread.join(timeout=30)

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
