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
        for sink, stream in zip(handle.sinks, (result.stdout, result.stderr), strict=True):
            if sink is not None and stream.data:
                try:
                    sink(stream.data)
                except Exception:
                    pass
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
    if data is not None:
        details["guest_mode"] = data["mode"]
        details["guest_reported"] = data["guest"]
    result.details.update(details)
    result.sandbox = {"vm": facts.backend, "guest_memory_mib": facts.mem_mib}
    if spec.guest_events:
        result.guest_observation = _guest_observation(handle, data)
    return result


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
