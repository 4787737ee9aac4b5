"""A microVM session's two step backends (``commands`` and ``interpreter``): each step is a
frame to the VM's session agent; its output comes back in ``out`` frames, fed to the step's
sinks as they arrive; its end in a ``done`` frame. A step past its deadline is ended by the
agent (``kill``): its processes are killed and, for code, the interpreter is started again;
the VM lives on. The host observes the VMM (``WorkloadStart("none")``); with
``spec.guest_events`` the agent sends its own record of the step (the guest's claims)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from glasshouse.backends._workspace_files import check_path
from glasshouse.core.execution import (
    BackendError,
    ExecutionResult,
    ExecutionSpec,
    Handle,
    OutputCapture,
    Sink,
    WorkloadStart,
    utcnow,
)
from glasshouse.guest import transport as T

from . import _events
from ._request import EVENTS_CAP
from ._vm import GuestFailure

if TYPE_CHECKING:
    from ._session import MicroVMLiveSandbox

#: How long the agent may take to end a killed step (a code step's interpreter is killed
#: at once; the new one is forked after the answer).
KILL_GRACE_S = 30.0
DEFAULT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8"}


@dataclass
class _StepHandle(Handle):
    ident: int = 0
    stdout_cap: OutputCapture | None = None
    stderr_cap: OutputCapture | None = None
    started: float = 0.0
    started_at: Any = None
    released: bool = False
    cpu_before: int | None = None


class VMSteps:
    """``commands`` (``code=False``) or ``interpreter`` (``code=True``) of a session VM."""

    isolation = "vm"

    def __init__(self, box: MicroVMLiveSandbox, code: bool) -> None:
        self._box = box
        self._code = code
        self.name = box.backend_name

    def prepare(self) -> None:
        """Nothing to do: the session's VM is up."""

    def start(
        self, spec: ExecutionSpec, stdout: Sink | None = None, stderr: Sink | None = None
    ) -> Handle:
        link = self._box.link()  # raises when paused or gone
        if spec.cwd:
            check_path(spec.cwd, allow_root=True)
        limit = spec.limits.output_bytes
        handle = _StepHandle(
            spec=spec,
            pid=self._box.vmm_pid,
            ident=link.next_id(),
            stdout_cap=OutputCapture(limit, stdout),
            stderr_cap=OutputCapture(limit, stderr),
        )
        handle.workload_start = WorkloadStart("none")  # the host sees the VMM, not the guest
        return handle

    def release(self, handle: Handle) -> None:
        assert isinstance(handle, _StepHandle)
        spec = handle.spec
        link = self._box.link()
        caps = (handle.stdout_cap, handle.stderr_cap)
        link.subscribe(handle.ident, lambda s, data: caps[s - 1].feed(data))  # type: ignore[union-attr]
        env = {**DEFAULT_ENV, **(self._box.env or {}), **(spec.env or {})}
        cwd = "/work" if not spec.cwd else "/work/" + check_path(spec.cwd, allow_root=True)
        request: dict[str, Any] = {
            "op": "code" if self._code else "spawn",
            "id": handle.ident,
            "env": env,
            "cwd": cwd,
            "events": EVENTS_CAP if spec.guest_events else None,
        }
        if self._code:
            request["code"] = str(spec.argv[-1])
        else:
            request["argv"] = list(spec.argv)
        handle.cpu_before = self._box.vmm_cpu_ms()
        handle.started = time.monotonic()
        handle.started_at = utcnow()
        link.send(request, spec.stdin or b"")
        handle.released = True

    def wait(self, handle: Handle) -> ExecutionResult:
        assert isinstance(handle, _StepHandle)
        link = self._box.link()
        deadline_s = handle.spec.deadline_s
        deadline = handle.started + deadline_s if deadline_s else None
        answer = link.wait(handle.ident, deadline)
        timed_out = False
        if answer is None and not link.closed:
            timed_out = True
            self._send_kill(handle)
            answer = link.wait(handle.ident, time.monotonic() + KILL_GRACE_S)
        gone = None
        if answer is None:
            gone = (
                f"the session's VM ended during the step ({link.why})"
                if link.closed
                else "the session's VM did not end the step after a kill"
            )
        return self._result(handle, answer[0] if answer else None, timed_out, gone)

    def _send_kill(self, handle: _StepHandle) -> None:
        try:
            self._box.link().send({"op": "kill", "id": 0, "step": handle.ident})
        except (GuestFailure, BackendError):
            pass

    def _result(
        self, handle: _StepHandle, done: dict[str, Any] | None, timed_out: bool, gone: str | None
    ) -> ExecutionResult:
        assert handle.stdout_cap is not None and handle.stderr_cap is not None
        box = self._box
        result = ExecutionResult(
            stdout=handle.stdout_cap.result(),
            stderr=handle.stderr_cap.result(),
            started_at=handle.started_at or utcnow(),
            ended_at=utcnow(),
            root_pid=handle.pid,
            timed_out=timed_out,
            network="disabled",
            sandbox=dict(box.facts),
        )
        restarted = False
        if done is not None:
            restarted = self._outcome(result, done)
        if timed_out:
            result.error = f"timed out after {handle.spec.deadline_s:g}s"
        elif gone is not None:
            result.error = gone
        elif handle.killed_reason is not None and result.error is None:
            result.error = f"killed: {handle.killed_reason}"
        if self._code:
            result.details["step_kind"] = "code: handed to the session VM's persistent interpreter"
        result.details["interpreter_restarted"] = restarted
        result.details.update(box.vm_details())
        after = box.vmm_cpu_ms()
        if after is not None and handle.cpu_before is not None:
            result.details["vmm_cpu_ms"] = after - handle.cpu_before  # this step's window
        if handle.spec.guest_events:
            result.guest_observation = self._observation(done)
        return result

    def _outcome(self, result: ExecutionResult, done: dict[str, Any]) -> bool:
        """The guest's claims about how the step ended; whether the interpreter restarted."""
        status = done.get("status")
        if _is_int(status):
            if os.WIFSIGNALED(status):
                result.signal = os.WTERMSIG(status)
            elif os.WIFEXITED(status):
                result.exit_code = os.WEXITSTATUS(status)
        elif _is_int(done.get("exit_code")):
            result.exit_code = int(done["exit_code"]) & 0xFF
        else:
            result.error = "the session's VM answered without an exit status"
        errno_ = done.get("exec_errno")
        if _is_int(errno_):
            result.exit_code = 127 if errno_ == 2 else 126
            result.error = f"exec failed: {os.strerror(errno_)}"
        if _is_int(done.get("cpu_time_ms")):
            result.cpu_time_ms = int(done["cpu_time_ms"])
        threads = done.get("threads")
        if _is_int(threads) and threads > 0:
            result.details["threads_left_running"] = threads
        result.details["guest_reported"] = {
            k: done[k] for k in ("cpu_time_ms", "max_rss_kb", "killed") if k in done
        }
        return bool(done.get("restarted")) if self._code else False

    def _observation(self, done: dict[str, Any] | None) -> Any:
        from glasshouse.core.profiling import Observation

        record = done.get("events") if done is not None else None
        if not isinstance(record, dict):
            why = "the guest sent no record of the step" + ("" if done else " (no answer)")
            return Observation.unavailable(_events.OBSERVER, "guest", why)
        try:
            raw = T.parse_events(record.get("events"))
        except T.ProtocolError as exc:
            return Observation.unavailable(_events.OBSERVER, "guest", f"invalid record: {exc}")
        count, lost = record.get("count"), record.get("lost")
        return _events.fold(
            raw,
            count=count if _is_int(count) else len(raw),
            lost=lost if _is_int(lost) else 0,
            mode="inprocess" if self._code else "exec",
            complete=True,
        )

    def kill(self, handle: Handle, reason: str = "killed") -> None:
        assert isinstance(handle, _StepHandle)
        if handle.killed_reason is None:
            handle.killed_reason = reason
        if handle.released:
            self._send_kill(handle)

    def cleanup(self, handle: Handle) -> None:
        assert isinstance(handle, _StepHandle)
        link = self._box.current_link
        if link is not None:
            link.unsubscribe(handle.ident)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
