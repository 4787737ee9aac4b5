"""Execution backends behind the one :class:`~glasshouse.core.execution.Backend` contract.

Backends are looked up by name and imported lazily, so ``glasshouse run`` pays only for the
backend it uses. A later backend joins by adding one line to ``_REGISTRY``.
"""

from __future__ import annotations

import importlib
from typing import Any

from glasshouse.core.checks import Check
from glasshouse.core.execution import Backend, BackendUnavailable

_REGISTRY: dict[str, str] = {
    "process": "glasshouse.backends.process:ProcessBackend",
    "fake": "glasshouse.backends.fake:FakeBackend",
    "sandbox": "glasshouse.backends.sandbox:SandboxBackend",
    "gvisor": "glasshouse.backends.sandbox:GVisorBackend",
    "microvm": "glasshouse.backends.microvm:MicroVMBackend",
    "firecracker": "glasshouse.backends.microvm:FirecrackerBackend",
    "qemu": "glasshouse.backends.microvm:QemuBackend",
}


def names() -> list[str]:
    return list(_REGISTRY)


def create(name: str, **options: Any) -> Backend:
    """Instantiate backend ``name``; raise BackendUnavailable with the reason if it can't be."""
    target = _REGISTRY.get(name)
    if target is None:
        raise BackendUnavailable(f"unknown backend {name!r} (known: {', '.join(_REGISTRY)})")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(f"backend {name!r} is not available in this build: {exc}") from exc
    return factory(**options)


def auto_select(allow_unsandboxed: bool = True) -> str:
    """The strongest isolation this host offers: a microVM where guests boot and snapshots
    restore, else the bubblewrap sandbox, else (only if allowed) the bare process backend.

    Each candidate module exposes ``probe() -> (ok, reason)``; probes must be fast (cached).
    """
    reasons = []
    for name, module_name in (
        ("microvm", "glasshouse.backends.microvm"),
        ("sandbox", "glasshouse.backends.sandbox"),
    ):
        try:
            ok, why = importlib.import_module(module_name).probe()
        except Exception as exc:  # missing module or failing probe: not usable here
            ok, why = False, str(exc)
        if ok:
            return name
        reasons.append(f"{name}: {why}")
    if allow_unsandboxed:
        return "process"
    raise BackendUnavailable("no isolating backend works on this host: " + "; ".join(reasons))


def doctor_checks() -> list[Check]:
    """``glasshouse doctor``: per-run cgroups (limits, accounting, exact tree kill)."""
    from pathlib import Path

    from glasshouse.backends import _cgroup

    checks: list[Check] = []
    ok, why = _cgroup.available()
    checks.append(
        Check("cgroups", ok, why, "" if ok else "per-run memory/pids limits and exact tree kill")
    )
    lay = _cgroup.layout()
    if lay.v2 is not None:
        fast = any(
            line.split()[1] == str(lay.v2) and "favordynmods" in line.split()[3]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.startswith("cgroup2 ")
        )
        checks.append(
            Check(
                "cgroup-attach-fast",
                fast,
                "favordynmods on"
                if fast
                else "favordynmods off: each run's cgroup attach "
                "waits for an RCU grace period (~10 ms); GLASSHOUSE_TUNE_CGROUPS=1 "
                "scripts/setup.sh turns it on (informational)",
            )
        )
    return checks


__all__ = ["auto_select", "create", "doctor_checks", "names"]
