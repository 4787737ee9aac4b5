"""Execution backends behind the one :class:`~glasshouse.core.execution.Backend` contract.

Backends are looked up by name and imported lazily, so ``glasshouse run`` pays only for the
backend it uses. A later backend joins by adding one line to ``_REGISTRY``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from glasshouse.core.execution import Backend, BackendUnavailable

if TYPE_CHECKING:
    from glasshouse.backends._auto_rule import Choice
    from glasshouse.core.checks import Check

_REGISTRY: dict[str, str] = {
    "process": "glasshouse.backends.process:ProcessBackend",
    "fake": "glasshouse.backends.fake:FakeBackend",
    "sandbox": "glasshouse.backends.sandbox.bwrap:SandboxBackend",
    "gvisor": "glasshouse.backends.sandbox.gvisor:GVisorBackend",
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


def auto_choice(allow_unsandboxed: bool = True) -> Choice:
    """What ``auto`` means on this host: the strongest isolation that serves real work.

    The microVM where guests boot and restore *and* touching fresh memory there is not far
    slower than in the bubblewrap sandbox (more than 10x and more than 1 s, or a timeout of
    the VM's 5 s check: :mod:`._auto_rule`); else the sandbox; else (only if allowed) the
    bare process backend. Each candidate's ``probe()`` and the workload check are cached
    on disk: the first resolution on a host pays for them (seconds), later ones read files.
    """
    from glasshouse.backends import _auto

    return _auto.choose(allow_unsandboxed)


def auto_select(allow_unsandboxed: bool = True) -> str:
    """The backend name :func:`auto_choice` picks."""
    return auto_choice(allow_unsandboxed).backend


def doctor_checks() -> list[Check]:
    """``glasshouse doctor``: per-run cgroups (limits, accounting, exact tree kill), and what
    ``auto`` picks here with the workload check's figures."""
    from pathlib import Path

    from glasshouse.backends import _cgroup
    from glasshouse.core.checks import Check

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
    from glasshouse.backends import _auto

    checks.append(_auto.doctor_check())
    return checks


__all__ = ["auto_choice", "auto_select", "create", "doctor_checks", "names"]
