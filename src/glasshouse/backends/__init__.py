"""Execution backends behind the one :class:`~glasshouse.core.execution.Backend` contract.

Backends are looked up by name and imported lazily, so ``glasshouse run`` pays only for the
backend it uses. A later backend joins by adding one line to ``_REGISTRY``.
"""

from __future__ import annotations

import importlib
from typing import Any

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


__all__ = ["create", "names"]
