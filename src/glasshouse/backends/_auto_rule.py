"""The ``auto`` rule: which backend serves real work, from measured figures. Pure.

``auto`` takes the strongest isolation that serves real work: the microVM where guests boot
and touching fresh memory there is not far slower than in the bubblewrap sandbox, else the
sandbox. "Far slower" (the bound): the VM's figure is more than :data:`MAX_RATIO` times the
sandbox's *and* more than :data:`MAX_VM_MS`, or the VM's check timed out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: The check both backends run: touch this many MiB of fresh memory (one ``bytearray``: past
#: glibc's largest mmap threshold, so it gets its own pages, never a pre-touched heap).
TOUCH_MIB = 32
#: The bound: the VM is far slower when above both (ratio to the sandbox, and milliseconds).
MAX_RATIO = 10.0
MAX_VM_MS = 1000.0


@dataclass(frozen=True)
class Figures:
    """What the workload check measured: milliseconds to touch :data:`TOUCH_MIB` MiB, timed
    inside each run (start-up excluded). ``vm_ms`` is None when the VM's run timed out
    (after ``vm_timeout_s``) or failed (``vm_error``); ``sandbox_ms`` likewise."""

    sandbox_ms: float | None
    vm_ms: float | None
    vm_timeout_s: float
    vm_timed_out: bool = False
    vm_error: str | None = None
    sandbox_error: str | None = None
    touch_mib: int = TOUCH_MIB
    #: When they were measured (UTC, ISO 8601).
    measured_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figures:
        """Raise TypeError (or ValueError) unless ``data`` is what :meth:`to_dict` wrote."""
        figures = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        for name in ("sandbox_ms", "vm_ms", "vm_timeout_s"):
            value = getattr(figures, name)
            if not (value is None and name != "vm_timeout_s") and (
                not isinstance(value, int | float) or isinstance(value, bool)
            ):
                raise TypeError(f"{name}: {value!r} is not a number")
        return figures


@dataclass(frozen=True)
class Choice:
    """The backend ``auto`` picked, why, and the figures behind it (None if not measured)."""

    backend: str
    reason: str
    figures: Figures | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "reason": self.reason,
            "figures": self.figures.to_dict() if self.figures else None,
        }


def _ms(value: float) -> str:
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


def decide(figures: Figures) -> Choice:
    """microvm or sandbox, with the reason, from the workload check's figures (both backends
    ran their probes: this decides between two that work)."""
    touch = f"touching {figures.touch_mib} MiB"
    if figures.vm_timed_out:
        return Choice(
            "sandbox",
            f"microvm far slower: {touch} timed out after {figures.vm_timeout_s:g} s in a VM"
            + (f" (sandbox {_ms(figures.sandbox_ms)})" if figures.sandbox_ms is not None else ""),
            figures,
        )
    if figures.vm_ms is None:
        return Choice("sandbox", f"microvm failed the workload check: {figures.vm_error}", figures)
    if figures.sandbox_ms is None:
        return Choice(
            "microvm",
            f"the sandbox failed the workload check ({figures.sandbox_error}); "
            f"{touch} took {_ms(figures.vm_ms)} in a VM",
            figures,
        )
    ratio = figures.vm_ms / max(figures.sandbox_ms, 0.001)
    both = f"{touch}: VM {_ms(figures.vm_ms)}, sandbox {_ms(figures.sandbox_ms)} ({ratio:.1f}x)"
    if ratio > MAX_RATIO and figures.vm_ms > MAX_VM_MS:
        return Choice(
            "sandbox",
            f"microvm far slower (> {MAX_RATIO:g}x and > {_ms(MAX_VM_MS)}): {both}",
            figures,
        )
    return Choice(
        "microvm",
        f"microvm serves real work (within {MAX_RATIO:g}x or {_ms(MAX_VM_MS)}): {both}",
        figures,
    )
