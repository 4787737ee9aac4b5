"""Host observation: what the kernel saw a run's process tree do.

``host_observer()`` is what the CLI, the server and the agent call for ``--profile host`` or
``combined``. It returns the eBPF observer (``glasshouse.observe.ebpf``: loaded and attached
once, one session per run), or, where BPF cannot work on this host, the strace fallback
(``observer: "strace"``, lower fidelity, labeled as such in the receipt), or raises
:class:`ObserverUnavailable` with every reason, so the caller records why and runs anyway.
"""

from __future__ import annotations

import os
import shutil
import threading
from typing import TYPE_CHECKING

from glasshouse.core.profiling import Observer, ObserverUnavailable

if TYPE_CHECKING:
    from glasshouse.core.checks import Check

__all__ = ["ObserverUnavailable", "doctor_checks", "host_observer", "observers_for"]

_cached: Observer | None = None
_cache_lock = threading.Lock()


def host_observer(*, fallback: bool = True, reuse: bool = True) -> Observer:
    """The best host observer this host supports.

    ``GLASSHOUSE_OBSERVER=ebpf|strace`` forces one (no fallback). With ``reuse`` (default)
    the eBPF observer is created once per process and shared: its load + attach costs
    0.1-0.25 s, and one loaded observer serves concurrent runs.
    """
    global _cached
    forced = os.environ.get("GLASSHOUSE_OBSERVER", "").strip().lower()
    if forced not in ("", "ebpf", "strace"):
        raise ObserverUnavailable(f"GLASSHOUSE_OBSERVER={forced!r}: expected ebpf or strace")
    with _cache_lock:
        if reuse and _cached is not None:
            return _cached
        reasons = []
        observer: Observer | None = None
        if forced in ("", "ebpf"):
            try:
                from glasshouse.observe.ebpf import EbpfObserver

                observer = EbpfObserver()
            except ObserverUnavailable as exc:
                reasons.append(f"ebpf: {exc}")
        if observer is None and (forced == "strace" or (fallback and not forced)):
            try:
                from glasshouse.observe.strace import StraceObserver

                observer = StraceObserver(fallback_reason="; ".join(reasons) or None)
            except ObserverUnavailable as exc:
                reasons.append(f"strace: {exc}")
        if observer is None:
            raise ObserverUnavailable("; ".join(reasons))
        if reuse:
            _cached = observer
        return observer


class _Unavailable:
    """An observer that could not be set up: each run's receipt records why (fail-open)."""

    provenance = "host"

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def start(self, root_pid: int) -> Observer:  # never returns
        raise ObserverUnavailable(self.reason)


def unavailable_observer(reason: str, name: str = "ebpf") -> Observer:
    """A stand-in for a host observer that failed to load: pass it to the Engine and every
    receipt says ``observation unavailable`` with ``reason``, and the run still happens.

    Typical use: ``try: obs = host_observer() except ObserverUnavailable as e:
    obs = unavailable_observer(str(e))``.
    """
    return _Unavailable(name, reason)  # type: ignore[return-value]


def observers_for(profile: str, *, fallback: bool = True) -> list[Observer]:
    """The host observers a run with ``profile`` needs, fail-open: an observer that cannot
    load is replaced by a stand-in whose receipts say why. (Guest observation comes from the
    backend, not from here.)"""
    if profile not in ("host", "combined"):
        return []
    try:
        return [host_observer(fallback=fallback)]
    except Exception as exc:  # ObserverUnavailable, and anything unexpected: never fatal
        return [unavailable_observer(str(exc))]


def doctor_checks() -> list[Check]:
    """Host probes for observation, for ``glasshouse doctor``."""
    from glasshouse.core.checks import Check

    checks: list[Check] = []
    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    checks.append(
        Check(
            "kernel BTF",
            btf,
            "/sys/kernel/btf/vmlinux present" if btf else "/sys/kernel/btf/vmlinux missing",
            "" if btf else "eBPF host observation (CO-RE needs the kernel's BTF)",
        )
    )
    try:
        from glasshouse.observe import ebpf

        path = ebpf.find_object()
        checks.append(Check("BPF object", True, path))
        try:
            import time

            t0 = time.monotonic()
            observer = ebpf.EbpfObserver(path)
            took = time.monotonic() - t0
            observer.close()
            checks.append(
                Check(
                    "BPF load + attach",
                    True,
                    f"tp_btf sched_process_fork/exec/exit + raw_tp sys_enter/sys_exit "
                    f"attached in {took * 1000:.0f} ms",
                )
            )
        except ObserverUnavailable as exc:
            checks.append(Check("BPF load + attach", False, str(exc), "eBPF host observation"))
    except ObserverUnavailable as exc:
        checks.append(Check("BPF object", False, str(exc), "eBPF host observation"))
    tracefs = any(
        os.path.isdir(p + "/events") for p in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    )
    checks.append(
        Check(
            "tracefs",
            True,
            "mounted"
            if tracefs
            else "not mounted (informational: the observer needs only BTF "
            "tracepoints, not tracefs)",
        )
    )
    strace = shutil.which("strace")
    checks.append(
        Check(
            "strace fallback",
            strace is not None,
            strace or "strace not installed (apt install strace)",
            "" if strace else "the strace fallback observer for hosts without BPF",
        )
    )
    return checks
