"""The ``process`` backend: the workload runs as a host process (no isolation), with limits.

The child gets its own session and process group, stdin from /dev/null unless given, and is
held at a gate (a blocking read on a pipe) between fork and exec so observers attach before
its first exec. A per-run cgroup (v2, or v1 controllers on hybrid hosts) holds the whole tree:
it enforces memory/pids/cpu limits, accounts cpu time and peak memory, and kills every
descendant, double-forked daemons included. Without cgroups, rlimits apply and the tree is
killed by process group, by /proc descendant walk and as child subreaper.

The run ends when the root process exits: anything it left running is killed (as a container
ends with its PID 1). If the Glasshouse process itself is killed outright, the root gets
SIGKILL with it (``PR_SET_PDEATHSIG``, see :mod:`._spawn`: the thread that starts a run must
outlive it, as :class:`~glasshouse.engine.Engine`'s does), and the next backend to prepare
kills what is left in the run's cgroup and removes it (its name carries the owner).

Subclasses (the bubblewrap sandbox) override :meth:`_command` to wrap the argv and reuse the
gate, cgroup, output and timeout machinery.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from glasshouse.backends import _cgroup, _proctree, _spawn
from glasshouse.backends._spawn import Command, resolve_executable  # (public from here)
from glasshouse.core import procfs
from glasshouse.core.artifacts import WorkspaceScan
from glasshouse.core.execution import (
    BackendError,
    ExecutionResult,
    ExecutionSpec,
    Handle,
    OutputCapture,
    Sink,
    utcnow,
)

_READ_CHUNK = 1 << 16
_CGROUP_PREFIX = "run-"


@dataclass
class ProcessHandle(Handle):
    started: float = 0.0
    started_at: object = None
    cgroup: _cgroup.Cgroup | None = None
    limits_applied: list[str] = field(default_factory=list)
    gate_w: int = -1
    err_r: int = -1
    out_r: int = -1
    errout_r: int = -1
    stdin_w: int = -1
    pidfd: int = -1
    stdout_cap: OutputCapture | None = None
    stderr_cap: OutputCapture | None = None
    released: bool = False
    reaped: bool = False
    status: int | None = None
    rusage: resource.struct_rusage | None = None
    kill_lock: threading.Lock = field(default_factory=threading.Lock)
    #: The run's own state for a subclass (a sandbox's workspace and fds), given to start().
    context: Any = None


class ProcessBackend:
    name = "process"
    isolation = "none"

    def __init__(self, *, cgroups: bool | None = None) -> None:
        """``cgroups``: True requires per-run cgroups, False never uses them, None = if able."""
        self._want_cgroups = cgroups
        self._prepared = False
        self._cgroups_ok = False
        self._cgroup_reason = ""
        self._subreaper = False
        self._lock = threading.Lock()
        self._roots: set[int] = set()  # root pids of this backend's runs in flight

    # -- lifecycle ----------------------------------------------------------------------
    def prepare(self) -> None:
        with self._lock:
            if self._prepared:
                return
            if self._want_cgroups is not False:
                self._cgroups_ok, self._cgroup_reason = _cgroup.available()
                if self._want_cgroups and not self._cgroups_ok:
                    raise BackendError(f"cgroups required but unavailable: {self._cgroup_reason}")
            else:
                self._cgroup_reason = "disabled"
            if self._cgroups_ok:  # what Glasshouse processes killed outright left running
                _cgroup.sweep_dead_owners(_CGROUP_PREFIX)
            else:
                self._subreaper = _proctree.set_subreaper()
            self._prepared = True

    def start(
        self,
        spec: ExecutionSpec,
        stdout: Sink | None = None,
        stderr: Sink | None = None,
        *,
        context: Any = None,
    ) -> ProcessHandle:
        """Fork the gated child. ``context``: a subclass's per-run state, passed to its hooks
        (``_command``) and kept on the handle (``handle.context``) for the others."""
        command = self._command(spec, context)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        gate_r, gate_w = os.pipe()
        errpipe_r, errpipe_w = os.pipe()
        if spec.stdin is not None:
            in_r, stdin_w = os.pipe()
            os.set_blocking(stdin_w, False)
        else:
            in_r, stdin_w = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1
        child_fds = (in_r, out_w, err_w, gate_r, errpipe_w)
        fd_limit = _spawn.fd_limit()
        parent = (os.getpid(), _spawn.prctl())
        try:  # (on the spawner thread: the parent-death signal is the process's, not ours)
            pid = _spawn.fork(
                lambda: _spawn.child(
                    command, in_r, out_w, err_w, gate_r, errpipe_w, fd_limit, parent
                )
            )
        except OSError as exc:
            for fd in (*child_fds, out_r, err_r, gate_w, errpipe_r, stdin_w):
                _close(fd)
            raise BackendError(f"fork failed: {exc}") from exc
        for fd in child_fds:
            os.close(fd)
        self._roots.add(pid)
        limit = spec.limits.output_bytes
        handle = ProcessHandle(
            spec=spec,
            pid=pid,
            gate_w=gate_w,
            err_r=errpipe_r,
            out_r=out_r,
            errout_r=err_r,
            stdin_w=stdin_w,
            stdout_cap=OutputCapture(limit, stdout),
            stderr_cap=OutputCapture(limit, stderr),
            context=context,
        )
        try:
            handle.pidfd = os.pidfd_open(pid)
            if self._cgroups_ok:
                name = _cgroup.owned_name(_CGROUP_PREFIX, f"{pid}-{handle.id}")
                handle.cgroup = _cgroup.Cgroup.create(name)
                handle.cgroup.add(pid)
                handle.limits_applied = handle.cgroup.set_limits(
                    spec.limits.memory_bytes, spec.limits.pids
                )
            self._after_fork(handle, command)
        except Exception as exc:
            self.kill(handle, "setup failed")
            self._reap(handle)
            self.cleanup(handle)
            raise BackendError(f"cannot set up run: {exc}") from exc
        return handle

    def release(self, handle: Handle) -> None:
        assert isinstance(handle, ProcessHandle)
        handle.started = time.monotonic()
        handle.started_at = utcnow()
        handle.released = True
        try:
            os.write(handle.gate_w, b"1")
        except BrokenPipeError:
            pass  # killed at its gate (kill is safe any time): wait() reports the kill
        _close(handle.gate_w)
        handle.gate_w = -1

    def wait(self, handle: Handle) -> ExecutionResult:
        assert isinstance(handle, ProcessHandle)
        spec = handle.spec
        deadline = handle.started + spec.deadline_s if spec.deadline_s else None
        exec_error = self._read_exec_error(handle)
        pending_stdin = memoryview(spec.stdin or b"")
        sel = selectors.DefaultSelector()
        sel.register(handle.out_r, selectors.EVENT_READ, handle.stdout_cap)
        sel.register(handle.errout_r, selectors.EVENT_READ, handle.stderr_cap)
        sel.register(handle.pidfd, selectors.EVENT_READ, None)
        if handle.stdin_w >= 0:
            if pending_stdin:
                sel.register(handle.stdin_w, selectors.EVENT_WRITE, "stdin")
            else:
                _close(handle.stdin_w)
                handle.stdin_w = -1
        root_exited = False
        timed_out = False
        ended = None
        try:
            while not root_exited:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                events = sel.select(timeout)
                if not events and deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                    self.kill(handle, "timeout")
                    continue
                for key, _ in events:
                    if key.data is None:
                        root_exited = True
                        ended = utcnow()
                    elif key.data == "stdin":
                        try:
                            n = os.write(handle.stdin_w, pending_stdin[:_READ_CHUNK])
                            pending_stdin = pending_stdin[n:]
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            pending_stdin = pending_stdin[:0]
                        if not pending_stdin:
                            sel.unregister(handle.stdin_w)
                            _close(handle.stdin_w)
                            handle.stdin_w = -1
                    else:
                        self._pump(sel, key.fd, key.data)
            # The root is gone: end the run, kill what it left behind, drain the pipes.
            self._reap(handle)
            self._kill_tree(handle)
            drain_deadline = time.monotonic() + 2.0
            while len(sel.get_map()) > 1 and time.monotonic() < drain_deadline:
                for key, _ in sel.select(0.05):
                    if key.data is None or key.data == "stdin":
                        with contextlib.suppress(KeyError, ValueError):
                            sel.unregister(key.fd)
                    else:
                        self._pump(sel, key.fd, key.data)
        finally:
            sel.close()
        return self._result(handle, exec_error, timed_out, ended or utcnow())

    def kill(self, handle: Handle, reason: str = "killed") -> None:
        assert isinstance(handle, ProcessHandle)
        with handle.kill_lock:
            if handle.killed_reason is None:
                handle.killed_reason = reason
        self._kill_tree(handle)

    def cleanup(self, handle: Handle) -> None:
        assert isinstance(handle, ProcessHandle)
        if not handle.reaped and handle.pid:
            self._kill_tree(handle)
            self._reap(handle)
        for name in ("gate_w", "err_r", "out_r", "errout_r", "stdin_w", "pidfd"):
            _close(getattr(handle, name))
            setattr(handle, name, -1)
        if handle.cgroup is not None:
            handle.cgroup.remove()
        self._roots.discard(handle.pid or 0)
        self._cleanup_extra(handle)

    # -- hooks for subclasses -----------------------------------------------------------
    def _command(self, spec: ExecutionSpec, context: Any = None) -> Command:
        if spec.network is False:
            raise BackendError(
                "the process backend cannot isolate the network; use --backend sandbox"
            )
        if spec.files or spec.outputs:
            raise BackendError(
                "the process backend has no private workspace for --file/--output;"
                " use --backend sandbox"
            )
        if spec.limits.disk_bytes is not None:
            raise BackendError(
                "the process backend has no workspace to hold to limits.disk; use --backend sandbox"
            )
        env = dict(os.environ if spec.env is None else spec.env)
        exe = resolve_executable(spec.argv[0], env.get("PATH", os.defpath), spec.cwd)
        return Command(exe, list(spec.argv), env, spec.cwd, rlimits=self._rlimits(spec))

    def _rlimits(self, spec: ExecutionSpec) -> list[tuple[int, int, int]]:
        lim = spec.limits
        out: list[tuple[int, int, int]] = [(resource.RLIMIT_CORE, 0, 0)]
        if lim.cpu_s is not None:
            soft = max(1, int(lim.cpu_s + 0.999))
            out.append((resource.RLIMIT_CPU, soft, soft + 1))
        if lim.file_size_bytes is not None:
            out.append((resource.RLIMIT_FSIZE, lim.file_size_bytes, lim.file_size_bytes))
        if not self._cgroups_ok:
            if lim.memory_bytes is not None:
                out.append((resource.RLIMIT_AS, lim.memory_bytes, lim.memory_bytes))
            if lim.pids is not None:
                out.append((resource.RLIMIT_NPROC, lim.pids, lim.pids))
        return out

    def _after_fork(self, handle: ProcessHandle, command: Command) -> None:
        """Called in the parent after fork, child still gated and placed in its cgroup."""

    def _cleanup_extra(self, handle: ProcessHandle) -> None:
        """Release subclass resources (workspaces, ...)."""

    def _finish_result(self, handle: ProcessHandle, result: ExecutionResult) -> None:
        """Let a subclass add facts (network, sandbox, outputs) to the result."""

    # -- internals ----------------------------------------------------------------------
    def _read_exec_error(self, handle: ProcessHandle) -> tuple[str, int] | None:
        data = b""
        while True:
            try:
                chunk = os.read(handle.err_r, 256)
            except InterruptedError:
                continue
            if not chunk:
                break
            data += chunk
        _close(handle.err_r)
        handle.err_r = -1
        if not data:
            return None
        stage, _, num = data.decode(errors="replace").partition(":")
        try:
            err = int(num)
        except ValueError:
            err = errno.EINVAL
        return stage, err

    def _pump(self, sel: selectors.BaseSelector, fd: int, cap: OutputCapture) -> None:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        if chunk:
            cap.feed(chunk)
        else:
            sel.unregister(fd)

    def _reap(self, handle: ProcessHandle) -> None:
        if handle.reaped or not handle.pid:
            return
        try:
            _, status, usage = os.wait4(handle.pid, 0)
        except ChildProcessError:
            handle.reaped = True
            return
        handle.status, handle.rusage, handle.reaped = status, usage, True

    def _kill_tree(self, handle: ProcessHandle) -> None:
        if handle.cgroup is not None:
            handle.cgroup.kill()
            return
        if not handle.pid:
            return
        # Without a cgroup, a fork can be in flight while we look: repeat until a pass finds
        # nothing left (orphans reparent to us, the subreaper, between passes).
        deadline = time.monotonic() + 2.0
        while True:
            victims = set(_proctree.descendants(handle.pid))
            if self._subreaper:
                victims |= set(_proctree.orphans_of(os.getpid(), exclude=self._roots))
            if not handle.reaped:
                victims.add(handle.pid)
            for pid in victims - {handle.pid}:  # reap what earlier passes killed
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
            living = {pid for pid in victims if procfs.running(pid)}
            if not living or time.monotonic() > deadline:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(handle.pid, signal.SIGKILL)
            for pid in living:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def _result(
        self,
        handle: ProcessHandle,
        exec_error: tuple[str, int] | None,
        timed_out: bool,
        ended_at: object,
    ) -> ExecutionResult:
        assert handle.stdout_cap is not None and handle.stderr_cap is not None
        result = ExecutionResult(
            stdout=handle.stdout_cap.result(),
            stderr=handle.stderr_cap.result(),
            started_at=handle.started_at or utcnow(),  # type: ignore[arg-type]
            ended_at=ended_at,  # type: ignore[arg-type]
            root_pid=handle.pid,
            timed_out=timed_out,
        )
        status = handle.status
        if status is not None:
            if os.WIFSIGNALED(status):
                result.signal = os.WTERMSIG(status)
            elif os.WIFEXITED(status):
                result.exit_code = os.WEXITSTATUS(status)
        if exec_error is not None:
            stage, err = exec_error
            code = 127 if err == errno.ENOENT else 126
            if stage != "exec":
                code = 125
                result.exit_code = None
            else:
                result.exit_code = code
            result.error = f"{stage} failed: {os.strerror(err)}"
        cg = handle.cgroup
        if cg is not None:
            result.cpu_time_ms = cg.cpu_time_ms()
            result.max_rss_kb = cg.max_rss_kb()
            result.oom_killed = cg.oom_killed()
            if cg.pids_limit_hit():
                result.details["pids_limit_hit"] = True
        if handle.rusage is not None:
            ru = handle.rusage
            if result.cpu_time_ms is None:
                result.cpu_time_ms = round((ru.ru_utime + ru.ru_stime) * 1000)
            if result.max_rss_kb is None:
                result.max_rss_kb = ru.ru_maxrss
        if timed_out:
            result.error = f"timed out after {handle.spec.deadline_s:g}s"
        elif handle.killed_reason is not None and result.error is None:
            result.error = f"killed: {handle.killed_reason}"
        elif result.oom_killed and result.error is None:
            result.error = "killed: memory limit exceeded (oom)"
        result.details["cgroup"] = "yes" if cg is not None else f"no ({self._cgroup_reason})"
        result.scope.update(cg.scope() if cg is not None else {})
        result.scope["pid_namespace"] = _pid_namespace()
        result.workspace = WorkspaceScan.not_collected(
            "the process backend has no workspace: the command ran in a host directory, "
            "which is not listed (it may be the user's own)"
        )
        if handle.limits_applied:
            result.details["limits"] = ",".join(handle.limits_applied)
        self._finish_result(handle, result)
        return result


def _pid_namespace() -> int | None:
    """The inode of our pid namespace, where a forked root's pids live."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
