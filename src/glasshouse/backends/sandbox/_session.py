"""A session's bubblewrap sandbox: one sandbox that lives across steps.

The sandbox is an ordinary :class:`~glasshouse.backends.sandbox.SandboxBackend` run whose
command is the step agent (:mod:`glasshouse.guest.step_agent`) as the sandbox's PID 1, with
a control socket. Its run cgroup bounds the whole session (memory, pids); its workspace
(and quota) is kept across a pause. Each step:

1. the host makes the step's pipes and a sub-cgroup ``step-N`` of the session's cgroup;
2. ``commands``: the agent forks the step's process, which waits at a gate; the host finds
   its host pid (``NSpid`` of the session cgroup's processes), moves it into ``step-N`` and
   hands the Handle to the Engine (observers attach to it; its first exec is the workload).
   ``interpreter``: the host moves the running interpreter into ``step-N`` (Handle kind
   ``running``);
3. release: the gate opens (or the code is handed over); wait: output is pumped to the
   sinks as it comes, the deadline enforced with ``cgroup.kill`` of ``step-N``;
4. the step's root ended: whatever it started is killed (``step-N``), the interpreter moves
   back to the session's cgroup, the pipes are drained.

The agent shares the workload's trust domain; the host relies on it only to start steps
and report their exit status. What the step did comes from the host's own observers.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import logging
import os
import selectors
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glasshouse.backends import _cgroup
from glasshouse.backends._workspace_files import HostWorkspaceFiles
from glasshouse.backends.process import ProcessHandle
from glasshouse.core.artifacts import WorkspaceScan
from glasshouse.core.execution import (
    BackendError,
    BackendUnavailable,
    ExecutionResult,
    ExecutionSpec,
    Handle,
    OutputCapture,
    Sink,
    WorkloadStart,
    utcnow,
)
from glasshouse.core.session import SessionSpec

from ._channel import Channel, ChannelClosed, socketpair
from ._layout import INSIDE_UID, INSIDE_WORKSPACE, _inside_cwd, _sandbox_env

if TYPE_CHECKING:
    from .bwrap import SandboxBackend

_log = logging.getLogger("glasshouse.session")
_AGENT_SOURCE = (Path(__file__).parent.parent.parent / "guest" / "step_agent.py").read_text()
#: The agent's and the interpreter's program: a short bootstrap that reads the step agent's
#: source from its socket (argv[2]), so process trees show this line, not 10 KiB of source.
_BOOT = (
    "import json,socket,sys;s=socket.socket(fileno=int(sys.argv[2]));m=s.recv(1<<17);"
    "s.detach();exec(json.loads(m)['source'])"
)
_INTERP_ARGV = ["python3", "-I", "-u", "-c", _BOOT, "interp", "3"]
_ANSWER_S = 10.0  # the agent answers a spawn within this (it only forks)
_READY_S = 30.0  # a fresh interpreter has loaded what it needs within this
_DRAIN_S = 2.0
_READ = 1 << 16


@dataclass
class StepHandle(Handle):
    ident: int = 0
    code: bool = False
    cgroup: _cgroup.Cgroup | None = None
    out_r: int = -1
    err_r: int = -1
    stdin: bytes = b""
    stdin_w: int = -1
    code_w: int = -1
    stdout_cap: OutputCapture | None = None
    stderr_cap: OutputCapture | None = None
    started: float = 0.0
    started_at: _dt.datetime | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: code steps: the interpreter's channel, the fds it gets, the step's environment
    channel: Channel | None = None
    child_fds: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: the interpreter was started afresh for (or by) this step
    restarted: bool = False
    cpu_ms: int | None = None
    oom_before: int = 0
    #: the step backend that started it (a one-shot run on a warm slot is routed back)
    steps: Steps | None = None


class BwrapLiveSandbox:
    """:class:`~glasshouse.core.session.LiveSandbox` over bubblewrap (see the module doc)."""

    isolation = "namespaces"

    def __init__(self, backend: SandboxBackend, spec: SessionSpec) -> None:
        spec.validate()
        self._backend = backend
        self._spec = spec
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._handle: ProcessHandle | None = None
        self._waiter: threading.Thread | None = None
        self._final: ExecutionResult | None = None
        self._agent: Channel | None = None
        self._interp: Channel | None = None
        self._interp_ident = 0
        self._interp_pid = 0  # host pid
        self.interpreter_restarts = 0
        self.closed = False
        backend.prepare()
        self._run = backend.prepare_run()
        self._run.keep = True
        self._run.drop_init()
        self.files = HostWorkspaceFiles(
            self._run.workspace.path, self._run.host_uid, self._run.host_gid, spec.max_file_bytes
        )
        self.commands = Steps(self, code=False)
        self.interpreter = Steps(self, code=True)
        try:
            self._start(first=True)
        except BaseException:
            self._run.keep = False
            with contextlib.suppress(Exception):
                self._run.close()
            raise
        network = "enabled" if spec.network else "loopback"
        self.network = network
        self.facts: dict[str, Any] = {
            "runtime": backend._version,
            "session_sandbox": "one bubblewrap sandbox for the whole session",
            "namespaces": ["user", "pid", "ipc", "uts", "mount", "cgroup"]
            + ([] if spec.network else ["net"]),
            "workspace": f"{INSIDE_WORKSPACE} (the session's: kept across steps)",
            "disk": self._run.workspace.quota or "no quota (the host filesystem's free space)",
            "host_uid": self._run.host_uid,
            "uid": INSIDE_UID,
            "capabilities": "none",
            **backend._seccomp_facts(),
        }

    # -- the sandbox ---------------------------------------------------------------------
    def _start(self, first: bool) -> None:
        host_end, box_end = socketpair()
        self._run.extra_fds = (box_end.detach(),)
        argv = ["python3", "-I", "-S", "-c", _BOOT, "agent", str(self._run.extra_fds[0])]
        spec = ExecutionSpec(
            argv=argv,
            env=self._spec.env,
            network=self._spec.network,
            limits=self._spec.limits,
            files=self._spec.files if first else {},
        )
        handle = self._backend.start(spec, run=self._run)
        if handle.cgroup is None:
            self._backend.kill(handle, "no cgroup")
            self._backend.cleanup(handle)
            host_end.close()
            raise BackendUnavailable(
                "sessions need cgroup v2 (each step is its own sub-cgroup): "
                + self._backend._cgroup_reason
            )
        self._backend.release(handle)
        self._handle = handle
        self._agent = Channel(host_end)
        self._agent.send({"op": "source", "source": _AGENT_SOURCE})
        self._final = None
        self._waiter = threading.Thread(
            target=self._wait_sandbox, args=(handle,), name="glasshouse-session", daemon=True
        )
        self._waiter.start()
        self._spawn_interpreter()

    def _wait_sandbox(self, handle: ProcessHandle) -> None:
        result = self._backend.wait(handle)
        with self._lock:
            self._final = result

    def _spawn_interpreter(self) -> None:
        """Ask the agent for a fresh interpreter and hand it its source, without waiting:
        it starts while the caller goes on (:meth:`interp` waits for it when a code step
        needs it), so creating a session does not pay for Python's startup."""
        assert self._agent is not None
        host_end, box_end = socketpair()
        ident = next(self._ids)
        try:
            request = {"op": "interp", "id": ident, "argv": _INTERP_ARGV}
            self._agent.send(request, [box_end.fileno()])
        finally:
            box_end.close()
        channel = Channel(host_end)
        channel.send({"op": "source", "source": _AGENT_SOURCE})  # read once it runs
        self._interp, self._interp_ident, self._interp_pid = channel, ident, 0

    def _interpreter_ready(self) -> None:
        """Wait until the interpreter asked for by :meth:`_spawn_interpreter` runs and has
        loaded what it needs; learn its host pid."""
        assert self._agent is not None and self._interp is not None
        answer = self._agent.wait_for(self._interp_ident, ("spawned", "error"), _ANSWER_S)
        if answer.get("op") != "spawned":
            raise BackendError(f"the sandbox could not start its interpreter: {answer}")
        self._interp.wait_for(0, ("ready",), _READY_S)
        self._interp_pid = self._host_pid(int(answer.get("pid", 0)))

    def _host_pid(self, inner: int) -> int:
        """The host pid of the sandbox's process ``inner`` (its pid inside)."""
        assert self._handle is not None and self._handle.cgroup is not None
        for pid in self._handle.cgroup.pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("NSpid:"):
                        fields = line.split()[1:]
                        if len(fields) > 1 and int(fields[-1]) == inner:
                            return pid
                        break
        raise BackendError(f"the sandbox's process {inner} is not in the session's cgroup")

    def session_cgroup(self) -> _cgroup.Cgroup:
        if self._handle is None or self._handle.cgroup is None:
            raise BackendError("the session's sandbox is not running")
        return self._handle.cgroup

    def agent(self) -> Channel:
        if self._agent is None or self._final is not None:
            raise ChannelClosed("the session's sandbox is not running")
        return self._agent

    def interp(self) -> tuple[Channel, int, int, bool]:
        """The interpreter's channel, request id and host pid, and whether it had to be
        started again (it died: killed by a timeout, a crash, ``kill -9 -1``...)."""
        agent = self.agent()
        died = self._interp is None or agent.take(self._interp_ident, ("exit",)) is not None
        if not died:
            assert self._interp is not None
            while _readable(agent) and not agent.closed:
                agent.read_one()
            died = agent.take(self._interp_ident, ("exit",)) is not None
            # Its socket's end closes as it dies, before the agent can report the exit.
            while not died and _readable(self._interp) and not self._interp.closed:
                self._interp.read_one()
            died = died or self._interp.closed or _dying(self._interp_pid)
        if died:
            if self._interp is not None:
                self._interp.close()
            self._spawn_interpreter()
            self.interpreter_restarts += 1
        if not self._interp_pid:
            self._interpreter_ready()
        assert self._interp is not None
        return self._interp, self._interp_ident, self._interp_pid, died

    def interp_died(self) -> None:
        """The interpreter ended during a step: the next code step starts a fresh one."""
        if self._interp is not None:
            self._interp.close()
        self._interp = None

    def prepare_oneshot(self, spec: ExecutionSpec) -> None:
        """Give this (still unused) sandbox to one run: its disk quota, memory and pids
        limits and its files become the run's (see :mod:`._oneshot`)."""
        run, cg = self._run, self.session_cgroup()
        limits = spec.limits
        if limits.disk_bytes is not None:
            self.facts["disk"] = run.workspace.resize_disk(limits.disk_bytes)
        applied = cg.set_limits(limits.memory_bytes, limits.pids)
        run.workspace.write_inputs(dict(spec.files))
        self.facts.pop("session_sandbox", None)
        self.facts["workspace"] = f"{INSIDE_WORKSPACE} (fresh per-run directory, cwd)"
        self.facts["warm"] = (
            "the sandbox, its step agent and a python3 were started before the request (warm "
            "pool); python3 -c CODE is handed to that interpreter"
        )
        if applied:
            self.facts["limits"] = ",".join(applied)

    def collect_outputs(
        self, names: list[str], cap: int
    ) -> tuple[dict[str, bytes], dict[str, str]]:
        out = self._run.workspace.collect_outputs(names, cap)
        return out, dict(self._run.workspace.output_status)

    def oom_kills(self) -> int:
        """How many OOM kills the session's memory limit caused so far."""
        return self.session_cgroup().oom_kill_count() if self._handle is not None else 0

    # -- LiveSandbox ---------------------------------------------------------------------
    def usage(self) -> dict[str, int | None]:
        if self._handle is None or self._handle.cgroup is None:
            return {"memory_bytes": 0, "cpu_ms": None, "pids": 0}
        cg = self._handle.cgroup
        return {
            "memory_bytes": cg.memory_current(),
            "cpu_ms": cg.cpu_time_ms(),
            "pids": len(cg.pids()),
        }

    def _stop(self, reason: str) -> ExecutionResult | None:
        handle, self._handle = self._handle, None
        if handle is None:
            return self._final
        for channel in (self._interp, self._agent):
            if channel is not None:
                channel.close()
        self._interp = self._agent = None
        self._backend.kill(handle, reason)
        if self._waiter is not None:
            self._waiter.join(timeout=30)
        self._backend.cleanup(handle)
        return self._final

    def pause(self) -> str:
        self._stop("paused")
        return (
            "the workspace (its files); the interpreter's state (variables, imports) and any "
            "process are gone"
        )

    def resume(self) -> None:
        if self.closed:
            raise BackendError("the session's sandbox is closed")
        if self._handle is None:
            self._start(first=False)

    def close(self) -> ExecutionResult:
        if self.closed:
            return self._final or ExecutionResult.failure("closed")
        self.closed = True
        result = self._stop("session closed")
        self._run.keep = False
        try:
            self._run.close()
        except OSError as exc:
            _log.warning("session workspace %s not removed: %s", self._run.workspace.path, exc)
        return result or ExecutionResult.failure("the session's sandbox never ran")


class Steps:
    """One of a live sandbox's two step backends (``commands`` or ``interpreter``)."""

    def __init__(self, box: BwrapLiveSandbox, code: bool) -> None:
        self.box = box
        self._box = box
        self._code = code
        self.name = "sandbox"
        self.isolation = "namespaces"

    def prepare(self) -> None:
        """Nothing to do: the session's sandbox is up."""

    def start(
        self, spec: ExecutionSpec, stdout: Sink | None = None, stderr: Sink | None = None
    ) -> Handle:
        box = self._box
        ident = next(box._ids)
        cgroup = box.session_cgroup().child(f"step-{ident}")
        pipes: list[int] = []
        try:
            in_r, stdin_w = os.pipe() if spec.stdin else (os.open(os.devnull, os.O_RDONLY), -1)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            pipes = [in_r, stdin_w, out_r, out_w, err_r, err_w]
            limit = spec.limits.output_bytes
            handle = StepHandle(
                spec=spec,
                pid=None,
                ident=ident,
                code=self._code,
                cgroup=cgroup,
                out_r=out_r,
                err_r=err_r,
                stdin=spec.stdin or b"",
                stdin_w=stdin_w,
                stdout_cap=OutputCapture(limit, stdout),
                stderr_cap=OutputCapture(limit, stderr),
            )
            env = {**(box._spec.env or {}), **(spec.env or {})}
            if self._code:
                channel, _, host_pid, handle.restarted = box.interp()
                code_r, code_w = os.pipe()
                pipes += [code_r, code_w]
                handle.code_w = code_w
                cgroup.add(host_pid)
                handle.pid = host_pid
                handle.workload_start = WorkloadStart("running")
                handle.channel = channel
                handle.child_fds = [in_r, out_w, err_w, code_r]
                handle.env = env
            else:
                env = _sandbox_env(ExecutionSpec(argv=spec.argv, env=env))
                request = {
                    "op": "spawn",
                    "id": ident,
                    "argv": list(spec.argv),
                    "env": env,
                    "cwd": _inside_cwd(spec.cwd),
                }
                agent = box.agent()
                agent.send(request, [in_r, out_w, err_w])
                answer = agent.wait_for(ident, ("spawned", "error"), _ANSWER_S)
                if answer.get("op") != "spawned":
                    raise BackendError(f"the sandbox could not start the step: {answer}")
                host_pid = box._host_pid(int(answer.get("pid", 0)))
                cgroup.add(host_pid)
                handle.pid = host_pid
                handle.workload_start = WorkloadStart("root_exec")
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
        except BaseException:
            for fd in pipes:
                with contextlib.suppress(OSError):
                    os.close(fd)
            cgroup.kill()
            cgroup.remove()
            raise
        return handle

    def release(self, handle: Handle) -> None:
        assert isinstance(handle, StepHandle)
        box = self._box
        handle.started = time.monotonic()
        handle.started_at = utcnow()
        if not self._code:
            box.agent().send({"op": "go", "id": handle.ident})
            return
        assert handle.channel is not None
        fds, handle.child_fds = handle.child_fds, []
        cwd = _inside_cwd(handle.spec.cwd) if handle.spec.cwd else None
        request = {"op": "run", "id": handle.ident, "env": handle.env, "cwd": cwd}
        try:
            handle.channel.send(request, fds)
        finally:
            for fd in fds:
                os.close(fd)
        code = str(handle.spec.argv[-1]).encode("utf-8", "surrogateescape")
        writer = threading.Thread(target=_write_all, args=(handle.code_w, code), daemon=True)
        handle.code_w = -1
        writer.start()

    def wait(self, handle: Handle) -> ExecutionResult:
        assert isinstance(handle, StepHandle)
        box = self._box
        spec = handle.spec
        deadline = handle.started + spec.deadline_s if spec.deadline_s else None
        agent = box.agent()
        watch: list[Channel] = [agent]
        if self._code and box._interp is not None:
            watch.append(box._interp)
        sel = selectors.DefaultSelector()
        sel.register(handle.out_r, selectors.EVENT_READ, handle.stdout_cap)
        sel.register(handle.err_r, selectors.EVENT_READ, handle.stderr_cap)
        for channel in watch:
            sel.register(channel.fileno(), selectors.EVENT_READ, channel)
        if handle.stdin_w >= 0:
            os.set_blocking(handle.stdin_w, False)
            sel.register(handle.stdin_w, selectors.EVENT_WRITE, "stdin")
        pending = memoryview(handle.stdin)
        timed_out = False
        status: int | None = None
        exit_code: int | None = None
        exec_errno: int | None = None
        threads = 0
        gone: str | None = None
        ended: _dt.datetime | None = None
        try:
            while ended is None:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                events = sel.select(timeout)
                if not events and deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                    self.kill(handle, "timeout")
                    deadline = None
                    continue
                for key, _ in events:
                    if key.data == "stdin":
                        try:
                            pending = pending[os.write(handle.stdin_w, pending[:_READ]) :]
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            pending = pending[:0]
                        if not pending:
                            sel.unregister(handle.stdin_w)
                            os.close(handle.stdin_w)
                            handle.stdin_w = -1
                    elif isinstance(key.data, Channel):
                        if key.data.read_one() is None:
                            sel.unregister(key.fd)
                    else:
                        _pump(sel, key.fd, key.data)
                mine = handle.ident if not self._code else box._interp_ident
                done = agent.take(mine, ("exit",))
                if done is not None:  # the step's process (or the interpreter) ended
                    status = int(done.get("status") or 0)
                    errno_ = done.get("exec_errno")
                    exec_errno = errno_ if isinstance(errno_, int) else None
                    ended = utcnow()
                    if self._code:
                        box.interp_died()
                    break
                if self._code and box._interp is not None:
                    answer = box._interp.take(handle.ident, ("done", "error"))
                    if answer is not None:
                        exit_code = _int(answer.get("exit_code"), 1)
                        threads = _int(answer.get("threads"), 0)
                        ended = utcnow()
                if agent.closed:
                    gone = "the session's sandbox ended during the step"
                    ended = utcnow()
            # The step's root is done: end whatever it started, then drain its pipes.
            self._end_step(handle)
            drain_until = time.monotonic() + _DRAIN_S
            while time.monotonic() < drain_until and any(
                isinstance(k.data, OutputCapture) for k in sel.get_map().values()
            ):
                for key, _ in sel.select(0.05):
                    if isinstance(key.data, OutputCapture):
                        _pump(sel, key.fd, key.data)
                    elif isinstance(key.data, Channel) and key.data.read_one() is None:
                        sel.unregister(key.fd)
        finally:
            sel.close()
        return self._result(handle, ended, timed_out, status, exit_code, exec_errno, threads, gone)

    def _end_step(self, handle: StepHandle) -> None:
        cg = handle.cgroup
        if cg is None:
            return
        box = self._box
        if self._code and box._interp is not None and box._handle is not None:
            with contextlib.suppress(OSError):  # the interpreter lives on, outside the step
                box.session_cgroup().add(box._interp_pid)
        if handle.cpu_ms is None:
            handle.cpu_ms = cg.cpu_time_ms()
        cg.kill()

    def _result(
        self,
        handle: StepHandle,
        ended: _dt.datetime | None,
        timed_out: bool,
        status: int | None,
        exit_code: int | None,
        exec_errno: int | None,
        threads: int,
        gone: str | None,
    ) -> ExecutionResult:
        assert handle.stdout_cap is not None and handle.stderr_cap is not None
        box = self._box
        result = ExecutionResult(
            stdout=handle.stdout_cap.result(),
            stderr=handle.stderr_cap.result(),
            started_at=handle.started_at or utcnow(),
            ended_at=ended or utcnow(),
            root_pid=handle.pid,
            timed_out=timed_out,
            network=box.network,
            sandbox=dict(box.facts),
            cpu_time_ms=handle.cpu_ms,
            workspace=WorkspaceScan.not_collected(
                "a session's workspace persists across steps: not listed per step (the "
                "files API lists it with digests)"
            ),
        )
        if status is not None:
            if os.WIFSIGNALED(status):
                result.signal = os.WTERMSIG(status)
            elif os.WIFEXITED(status):
                result.exit_code = os.WEXITSTATUS(status)
        else:
            result.exit_code = exit_code
        if exec_errno is not None:
            result.exit_code = 127 if exec_errno == 2 else 126
            result.error = f"exec failed: {os.strerror(exec_errno)}"
        restarted = handle.restarted
        if self._code:
            result.details["step_kind"] = "code: handed to the session's persistent interpreter"
            if status is not None:  # the interpreter died with the step: a new one is made
                restarted = True
            if threads:
                result.details["threads_left_running"] = threads
        result.details["interpreter_restarted"] = restarted
        if box.oom_kills() > handle.oom_before:
            result.oom_killed = True
        if timed_out:
            result.error = f"timed out after {handle.spec.deadline_s:g}s"
        elif gone is not None:
            result.error = gone
        elif handle.killed_reason is not None and result.error is None:
            result.error = f"killed: {handle.killed_reason}"
        elif result.oom_killed and result.error is None and result.signal is not None:
            result.error = "killed: the session's memory limit was exceeded (oom)"
        return result

    def kill(self, handle: Handle, reason: str = "killed") -> None:
        assert isinstance(handle, StepHandle)
        with handle.lock:
            if handle.killed_reason is None:
                handle.killed_reason = reason
        if handle.cgroup is not None and not handle.cgroup.removed:
            handle.cgroup.kill(timeout=1.0)

    def cleanup(self, handle: Handle) -> None:
        assert isinstance(handle, StepHandle)
        self._end_step(handle)
        for name in ("out_r", "err_r", "stdin_w", "code_w"):
            fd = getattr(handle, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(handle, name, -1)
        for fd in handle.child_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        handle.child_fds = []
        if handle.cgroup is not None:
            handle.cgroup.remove()
        if self._code and self._box._interp is None and self._box._handle is not None:
            with contextlib.suppress(Exception):  # the next code step would retry anyway
                self._box._spawn_interpreter()  # starts now, off the next step's clock


def _pump(sel: selectors.BaseSelector, fd: int, cap: OutputCapture) -> None:
    try:
        chunk = os.read(fd, _READ)
    except BlockingIOError:
        return
    if chunk:
        cap.feed(chunk)
    else:
        sel.unregister(fd)


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass  # the interpreter died: the step's result says so
    finally:
        os.close(fd)


def _dying(pid: int) -> bool:
    """Whether host process ``pid`` is gone, a zombie, or has a SIGKILL pending (a step's
    ``kill -9 -1`` may not have been delivered yet when the next step starts)."""
    if not pid:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "State" and value.split()[:1] in (["Z"], ["X"]):
            return True
        if key in ("SigPnd", "ShdPnd") and int(value, 16) & (1 << (signal.SIGKILL - 1)):
            return True
    return False


def _readable(channel: Channel) -> bool:
    import select

    ready, _, _ = select.select([channel.fileno()], [], [], 0)
    return bool(ready)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


__all__ = ["BwrapLiveSandbox"]
