"""What the bubblewrap and gVisor backends share: workspaces, identities, the run lifecycle.

Both reuse :class:`~glasshouse.backends.process.ProcessBackend` for the gate, the per-run
cgroup, rlimits, output capture and timeouts, and change only *what* is executed. Per-run
resources (workspace, uid, runtime fds) are made by :meth:`SandboxBase.prepare_run`, apart
from :meth:`SandboxBase.start`, so a warm pool can make them ahead; each serves one run and
travels with it as the run's context (never through shared state).
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import Any

from glasshouse.backends import _workspace, _written
from glasshouse.backends._quota import QuotaUnavailable
from glasshouse.backends._workspace import DEFAULT_OUTPUT_CAP, Workspace, ensure_base
from glasshouse.backends.process import Command, ProcessBackend, ProcessHandle
from glasshouse.core.artifacts import DEFAULT_HASH_FILE_CAP, DEFAULT_HASH_TOTAL_CAP
from glasshouse.core.execution import (
    BackendError,
    BackendUnavailable,
    ExecutionResult,
    ExecutionSpec,
    Sink,
    WorkloadStart,
)

from ._init import InitUnavailable, build_init
from ._layout import (
    _DEFAULT_PATH,
    INSIDE_WORKSPACE,
    _check_runnable,
    _default_base,
    _inside_cwd,
    _sandbox_env,
)
from ._probe import _tool_version
from ._rootfs import _etc_skeleton
from ._run import SandboxRun, _last_runtime_line

#: Per-run host uids (root only) come from [_UID_BASE, _UID_BASE + _UID_SPAN): far from
#: system users, login users and the usual /etc/subuid ranges.
_UID_BASE = 0x70000000
_UID_SPAN = 1 << 16


class SandboxBase(ProcessBackend):
    """A sandbox runtime (``_exe``: the binary, ``_package``: the apt package that has it)."""

    _exe = ""
    _package = ""

    def __init__(
        self,
        *,
        cgroups: bool | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        host_uid: int | None = None,
        cpu_cores: float | None = None,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        hash_file_cap: int = DEFAULT_HASH_FILE_CAP,
        hash_total_cap: int = DEFAULT_HASH_TOTAL_CAP,
    ) -> None:
        """``host_uid``: pin the host uid the sandbox runs as (root only; default a fresh
        uid per run). ``cpu_cores``: cgroup cpu quota. ``output_cap``: bytes of
        ``spec.outputs`` copied back, per file and in total. ``hash_file_cap`` and
        ``hash_total_cap``: bytes hashed for the receipt's ``artifacts.workspace``, per file
        and per run."""
        super().__init__(cgroups=cgroups)
        self._base = Path(base_dir) if base_dir is not None else _default_base()
        self._pinned_uid = host_uid
        self._cpu_cores = cpu_cores
        self._output_cap = output_cap
        self._hash_caps = (hash_file_cap, hash_total_cap)
        self._uid_counter = itertools.count(os.getpid() * 7919)
        self._sandbox_prepared = False
        self._binary = ""
        self._version = ""
        self._etc: dict[bool, Path] = {}  # network? -> /etc skeleton (or gVisor root)
        self._init: Path | None = None  # glasshouse-init, or None: runtime's own PID 1
        self._init_reason = ""
        #: leftovers of dead processes the last sweep could not remove (logged; never fatal)
        self.sweep_failures: list[str] = []

    # -- preparation (once per backend) -------------------------------------------------
    def prepare(self) -> None:
        super().prepare()
        with self._lock:
            if self._sandbox_prepared:
                return
            self._check_host()
            found = shutil.which(self._exe)
            if found is None:
                raise BackendUnavailable(
                    f"{self._exe} not found: install the {self._package} package"
                )
            # Resolved: the runtime is exec'd after dropping to the run's uid, which may not
            # be able to traverse the directory a PATH symlink lives in.
            self._binary = os.path.realpath(found)
            self._version = _tool_version(found)
            ensure_base(self._base)
            _workspace.sweep(self._base, failures=self.sweep_failures)
            try:
                self._init = build_init()
            except InitUnavailable as exc:  # still isolated; only signal deaths blur
                self._init, self._init_reason = None, str(exc)
            for net in (False, True):
                self._etc[net] = _etc_skeleton(self._base, net)
            self._prepare_runtime()
            self._sandbox_prepared = True

    def _check_host(self) -> None:
        """Raise BackendUnavailable when this host cannot run the runtime at all."""

    def _prepare_runtime(self) -> None:
        """Once per backend, after the shared preparation (under the backend's lock)."""

    # -- per-run resources (a warm pool can call this ahead) ----------------------------
    def prepare_run(self) -> SandboxRun:
        """Create one run's workspace, uid and runtime fds."""
        self.prepare()
        # Cheap (a stat each): put back modes something else broke, so runs keep working.
        ensure_base(self._base, self._etc.values())
        _workspace.retry_left()
        uid, gid = self._next_identity()
        run = SandboxRun(Workspace.create(self._base, uid, gid), uid, gid)
        try:
            self._open_run_fds(run)
        except Exception:
            run.close()
            raise
        return run

    def _open_run_fds(self, run: SandboxRun) -> None:
        """Open the fds the runtime passes to the sandbox (bwrap: seccomp, status pipes)."""

    def _next_identity(self) -> tuple[int, int]:
        if os.geteuid() != 0:
            return os.geteuid(), os.getegid()
        if self._pinned_uid is not None:
            return self._pinned_uid, self._pinned_uid
        uid = _UID_BASE + next(self._uid_counter) % _UID_SPAN
        return uid, uid

    # -- Prewarmable (glasshouse.core.execution): the server's warm pool ----------------
    def prewarm(self) -> SandboxRun:
        """One run's resources made ahead; any spec can use it (network is set at start)."""
        return self.prepare_run()

    def start_prewarmed(
        self,
        slot: SandboxRun,
        spec: ExecutionSpec,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
    ) -> ProcessHandle:
        return self.start(spec, stdout, stderr, run=slot)

    def discard(self, slot: SandboxRun) -> None:
        slot.close()

    # -- lifecycle ----------------------------------------------------------------------
    def start(  # type: ignore[override]
        self,
        spec: ExecutionSpec,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
        *,
        run: SandboxRun | None = None,
        context: Any = None,
    ) -> ProcessHandle:
        """Start ``spec`` in a fresh sandbox (``run``: one made ahead by prepare_run)."""
        self.prepare()
        if run is None:
            run = self.prepare_run()
        elif run.closed or (run.used and not run.keep):
            raise BackendError("a prepared sandbox run can be used only once")
        again, run.used = run.used, True
        try:
            if again:  # a session's sandbox started again on its workspace (resume)
                self._open_run_fds(run)
            elif spec.limits.disk_bytes is not None:  # at start: a slot predates its spec
                run.workspace.limit_disk(spec.limits.disk_bytes)
            if not again:
                run.workspace.write_inputs(dict(spec.files))
        except QuotaUnavailable as exc:
            run.close()
            raise BackendError(f"limits.disk cannot be enforced: {exc}") from exc
        except (OSError, ValueError) as exc:
            run.close()
            raise BackendError(f"cannot place input files in the workspace: {exc}") from exc
        try:
            return super().start(spec, stdout, stderr, context=run)
        except BaseException:
            if run.keep:
                run.close_fds()
            else:
                run.close()
            raise

    # -- ProcessBackend hooks -------------------------------------------------------------
    def _command(self, spec: ExecutionSpec, context: Any = None) -> Command:
        run = _run_of(context)
        env = _sandbox_env(spec)
        cwd = _inside_cwd(spec.cwd)
        _check_runnable(spec.argv[0], env.get("PATH", _DEFAULT_PATH), cwd, run.workspace.path)
        return self._runtime_command(spec, run, env, cwd, bool(spec.network))

    def _runtime_command(
        self, spec: ExecutionSpec, run: SandboxRun, env: dict[str, str], cwd: str, network: bool
    ) -> Command:
        raise NotImplementedError

    def _workload_start(self) -> WorkloadStart:
        """Where the command starts in the runtime's process tree (the rest is harness)."""
        return WorkloadStart("launcher", str(self._init or self._binary))

    def _after_fork(self, handle: ProcessHandle, command: Command) -> None:
        handle.workload_start = self._workload_start()
        run = _run_of(handle.context)
        run.close_child_fds()
        cg = handle.cgroup
        if self._cpu_cores is not None and cg is not None:
            handle.limits_applied += cg.set_limits(None, None, self._cpu_cores)

    def _finish_result(self, handle: ProcessHandle, result: ExecutionResult) -> None:
        run = handle.context
        if not isinstance(run, SandboxRun):
            return
        spec = handle.spec
        result.network = "enabled" if spec.network else "loopback"
        result.details["runtime"] = self._version
        if run.workspace.quota:
            result.details["disk_limit"] = run.workspace.quota
        facts: dict[str, Any] = {
            "runtime": self._version,
            "root_fs": "read-only /usr and a minimal /etc; nothing else of the host",
            "workspace": f"{INSIDE_WORKSPACE} (fresh per-run directory, cwd)",
            "disk": run.workspace.quota or "no quota (the host filesystem's free space)",
            "tmp": "private tmpfs",
            "host_uid": run.host_uid,
            "capabilities": "none",
        }
        self._runtime_result(run, result, facts)
        result.scope["pid_namespace"] = facts.get("pid_namespace")
        file_cap, total_cap = self._hash_caps
        result.workspace = _written.scan(
            run.workspace.path,
            dict(spec.files),
            shown_as=INSIDE_WORKSPACE,
            file_cap=file_cap,
            total_cap=total_cap,
        )
        if spec.outputs:
            result.outputs = run.workspace.collect_outputs(list(spec.outputs), self._output_cap)
            result.output_status.update(run.workspace.output_status)
            facts["outputs"] = [f"{k}: {v}" for k, v in run.workspace.output_status.items()]
        result.sandbox.update(facts)

    def _runtime_result(
        self, run: SandboxRun, result: ExecutionResult, facts: dict[str, Any]
    ) -> None:
        """Add the runtime's facts and replace its exit status with the command's."""

    def _setup_failed(self, result: ExecutionResult, prefix: str) -> bool:
        """The command never ran and nothing killed the sandbox: the runtime's own setup
        failed. Say so (its last message is on stderr) instead of reporting its exit code."""
        if result.error is not None or result.timed_out or result.signal is not None:
            return False
        if result.oom_killed:
            return False
        why = _last_runtime_line(result.stderr.data, prefix) or f"exit {result.exit_code}"
        result.error = f"sandbox setup failed: {why}"
        result.exit_code = None
        return True

    def _apply_wait_status(self, docs: list[dict[str, Any]], result: ExecutionResult) -> None:
        """Replace the runtime's "exit code 128+N" with the command's real wait status."""
        if result.timed_out or result.signal is not None or result.exit_code is None:
            return  # the sandbox itself was killed (timeout, kill, oom): that is the outcome
        status = next((d["wait-status"] for d in docs if "wait-status" in d), None)
        if not isinstance(status, int) or not 0 <= status <= 0xFFFF:
            if self._init is None and result.exit_code > 128:
                result.details["exit_status_note"] = (
                    f"no glasshouse-init ({self._init_reason}): exit code {result.exit_code} "
                    "may mean the command was killed by a signal"
                )
            return
        if os.WIFSIGNALED(status):
            result.signal, result.exit_code = os.WTERMSIG(status), None
        elif os.WIFEXITED(status):
            result.exit_code = os.WEXITSTATUS(status)

    def _cleanup_extra(self, handle: ProcessHandle) -> None:
        run, handle.context = handle.context, None
        if isinstance(run, SandboxRun):
            if run.keep:  # a session's: its workspace stays until the session closes
                run.close_fds()
            else:
                run.close()


def _run_of(context: Any) -> SandboxRun:
    if not isinstance(context, SandboxRun):
        raise BackendError("sandbox run missing (start() must be called, not _command())")
    return context
