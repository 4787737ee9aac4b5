"""A microvm run's result: what the guest claims (exit status, output, rusage, its events)
beside what the host knows (VMM pid and cgroup, times, timeout, digests of what was
booted). The receipt says which fields come from the host: docs/threat-model.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from glasshouse.core.artifacts import WorkspaceScan
from glasshouse.core.execution import ExecutionResult, StreamResult
from glasshouse.core.profiling import Observation

from . import _events
from . import images as _images
from ._handle import VMHandle
from ._streamed import StreamedOutput


@dataclass(frozen=True)
class VMFacts:
    """What the backend knows of every VM it runs (host facts for the receipt)."""

    backend: str
    vmm_version: str
    images: _images.GuestImages
    mem_mib: int


def build_result(
    handle: VMHandle,
    data: dict[str, Any] | None,
    error: str | None,
    timed_out: bool,
    ended: Any,
    facts: VMFacts,
) -> ExecutionResult:
    """The run's result: the guest's claims (when it answered) and the host's facts."""
    spec = handle.spec
    result = ExecutionResult(
        started_at=handle.started_at,
        ended_at=ended,
        root_pid=handle.pid,
        timed_out=timed_out,
        network="disabled",
    )
    streamed = handle.streamed or StreamedOutput(spec.limits.output_bytes, handle.sinks)
    if data is not None:
        result.exit_code = data["exit_code"]
        result.signal = data["signal"]
        result.error = data["error"]
        result.stdout = _stream(data["stdout"])
        result.stderr = _stream(data["stderr"])
        result.cpu_time_ms = data["cpu_time_ms"]
        result.max_rss_kb = data["max_rss_kb"]
        result.outputs = {k: v for k, v in data["outputs"].items() if k in spec.outputs}
        for name in set(spec.outputs) - set(result.outputs):  # the guest gives no reason
            result.output_status[name] = "not returned by the guest: missing or over budget"
        for number, name in ((1, "stdout"), (2, "stderr")):  # what was not streamed ahead
            stream = data[name]
            streamed.tell(number, stream["data"][stream.get("sent", 0) :])
        _oom(result, data.get("oom"))
    else:  # no answer: the output streamed so far is all there is
        result.stdout, result.stderr = streamed.partial(1), streamed.partial(2)
    if data is None and (timed_out or handle.killed_reason is not None):
        # The host SIGKILLed the VMM: the workload ended by that signal (host fact).
        result.signal = 9
    if timed_out:
        result.error = f"timed out after {spec.deadline_s:g}s"
    elif data is None:
        if handle.killed_reason is not None:
            result.error = f"killed: {handle.killed_reason}"
        else:
            tail = handle.vm.console_tail()[-600:] if handle.vm is not None else ""
            result.error = f"{error or 'no result from the guest'}" + (
                f" (console: {tail.strip()})" if tail.strip() else ""
            )
    details: dict[str, Any] = {
        "backend": facts.backend,
        "isolation": "vm",
        "vmm": facts.vmm_version,
        "vmm_pid": handle.pid,
        "kvm": _images.kvm_kind(),
        "guest_kernel_digest": facts.images.kernel_digest,
        "guest_rootfs_digest": facts.images.rootfs_digest,
        "vm_source": handle.source,
        "prewarmed": handle.primed,
        "jailer": handle.vm is not None and handle.vm.jailed,
        "timings_ms": dict(handle.timings),
        "vmm_cgroup": handle.cgroup_note,
        "host_fields": "vmm_pid,vmm_cgroup,vmm_cpu_ms,vmm_peak_memory_kb,timings,timeout,"
        "digests,vm_source",
    }
    result.workspace = WorkspaceScan.not_collected(
        "the guest does not send back a listing of its workspace (/work): only the "
        "requested outputs are copied back (artifacts.outputs)"
    )
    result.scope["note"] = (
        "the workload's processes live in the VM guest, which the host cannot see: the host "
        "observes the VMM"
    )
    if handle.cgroup is not None:
        result.scope.update(handle.cgroup.scope())
        # The VMM's whole life (restore, and for a prewarmed VM its priming and wait too):
        # the guest kernel runs inside it, emulated on kvm_pvm.
        details["vmm_cpu_ms"] = handle.cgroup.cpu_time_ms()
        details["vmm_peak_memory_kb"] = handle.cgroup.max_rss_kb()
    if spec.limits.disk_bytes is not None:
        details["disk_limit"] = _disk_limit(spec.limits.disk_bytes, data)
    if data is not None:
        details["guest_mode"] = data["mode"]
        details["guest_reported"] = data["guest"]
    result.details.update(details)
    result.sandbox = {"vm": facts.backend, "guest_memory_mib": facts.mem_mib}
    if spec.guest_events:
        result.guest_observation = _guest_observation(handle, data)
    return result


def _oom(result: ExecutionResult, note: str | None) -> None:
    """The guest says the memory limit (or its own RAM) stopped the command."""
    if note is None:
        return
    result.oom_killed = True
    if result.error is None:
        how = "killed: " if result.signal is not None else ""
        result.error = f"{how}memory limit exceeded (oom): {note}"
    result.details["oom"] = note


def _disk_limit(size: int, data: dict[str, Any] | None) -> str:
    """How ``limits.disk`` is enforced (the host asked; a guest that cannot apply it fails
    the run), and whether the guest found its workspace full after the run."""
    applied = data["guest"].get("workspace_bytes") if data is not None else None
    if isinstance(applied, int) and 0 < applied < size:
        size_note = f"{applied} bytes (the guest's free RAM; {size} asked)"
    else:
        size_note = f"{size} bytes"
    note = (
        f"tmpfs size limit on the guest's workspace (/work): {size_note}; writes past it "
        "get ENOSPC; guest RAM"
    )
    full = data is not None and data["guest"].get("workspace_full") is True
    return note + ("; full after the run (the guest's claim)" if full else "")


def _guest_observation(handle: VMHandle, data: dict[str, Any] | None) -> Observation:
    final = data["events"] if data is not None else None
    if final is None and not handle.events:
        why = "the guest sent no events" + ("" if data is not None else " (no result)")
        return Observation.unavailable(_events.OBSERVER, "guest", why)
    raw = handle.events + (final["events"] if final else [])
    return _events.fold(
        raw,
        count=final["count"] if final else len(raw),
        lost=final["lost"] if final else 0,
        mode=data["mode"] if data is not None else "",
        complete=final is not None,
    )


def _stream(s: dict[str, Any]) -> StreamResult:
    return StreamResult(s["data"], s["size"], s["sha256"], s["truncated"])
