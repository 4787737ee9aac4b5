"""Host capability probes: what this host can do, and what each gap disables.

Core probes live here; a part of Glasshouse adds its own by exposing
``doctor_checks() -> list[Check]`` in one of :data:`_PROVIDERS`. A provider's check replaces
a core check of the same name (it knows more, e.g. it actually loads a BPF program).
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

from glasshouse.core.checks import Check

__all__ = ["Check", "kvm_kind", "run_checks"]

_PROVIDERS = (
    "glasshouse.backends",
    "glasshouse.observe",
    "glasshouse.backends.sandbox",
    "glasshouse.backends.microvm",
    "glasshouse.policy",
)


def _exists(name: str, path: str, disables: str) -> Check:
    ok = Path(path).exists()
    return Check(name, ok, path if ok else f"{path} missing", "" if ok else disables)


def _binary(name: str, disables: str, *candidates: str) -> Check:
    for cand in candidates or (name,):
        found = shutil.which(cand)
        if found:
            return Check(name, True, found)
    return Check(name, False, "not found on PATH", disables)


def kvm_kind() -> str | None:
    """Which KVM implementation provides /dev/kvm: kvm_intel, kvm_amd, kvm_pvm, or None."""
    if not Path("/dev/kvm").exists():
        return None
    for kind in ("kvm_intel", "kvm_amd", "kvm_pvm"):
        if Path("/sys/module", kind).exists():
            return kind
    return "kvm"


def _core_checks() -> list[Check]:
    checks = [
        Check(
            "root",
            os.geteuid() == 0,
            f"euid {os.geteuid()}",
            "" if os.geteuid() == 0 else "BPF observation, cgroups, sandboxes (need root)",
        ),
        _exists("btf", "/sys/kernel/btf/vmlinux", "CO-RE eBPF observation (--profile host)"),
        Check(
            "tracefs",
            Path("/sys/kernel/tracing/events").exists()
            or Path("/sys/kernel/debug/tracing/events").exists(),
            "mounted"
            if Path("/sys/kernel/tracing/events").exists()
            else "not mounted "
            "(informational: Glasshouse attaches tp_btf/raw_tp and does not need it)",
        ),
    ]
    kind = kvm_kind()
    checks.append(
        Check(
            "kvm",
            kind is not None and os.access("/dev/kvm", os.R_OK | os.W_OK),
            kind or "/dev/kvm missing",
            "" if kind else "microvm backend (firecracker, qemu)",
        )
    )
    checks += [
        _binary("bubblewrap", "sandbox backend", "bwrap"),
        _binary("runsc", "gvisor backend"),
        _binary("qemu", "qemu microvm backend", "qemu-system-x86_64"),
        _binary("firecracker", "firecracker microvm backend"),
        _binary("strace", "fallback observer where BPF is unavailable"),
        _binary("clang", "building eBPF objects"),
        _binary("bpftool", "building eBPF objects (vmlinux.h)"),
    ]
    return checks


def run_checks() -> list[Check]:
    """Every probe, core ones first, each provider's checks replacing same-named ones."""
    checks = {c.name: c for c in _core_checks()}
    for module_name in _PROVIDERS:
        try:
            provider = importlib.import_module(module_name)
        except ImportError:
            continue
        fn = getattr(provider, "doctor_checks", None)
        if fn is None:
            continue
        try:
            for check in fn():
                checks[check.name] = check
        except Exception as exc:  # a broken probe is a finding, not a crash
            checks[module_name] = Check(module_name, False, f"probe failed: {exc}")
    return list(checks.values())
