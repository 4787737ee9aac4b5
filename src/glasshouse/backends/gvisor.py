"""The ``gvisor`` backend: the sandbox layout under gVisor's runsc (see :mod:`.sandbox`).

Kept as its own module so callers (the contract suite, doctor) can probe gVisor separately
from bubblewrap; the implementation is :class:`~glasshouse.backends.sandbox.GVisorBackend`.
"""

from __future__ import annotations

from glasshouse.backends.sandbox import GVisorBackend, probe_gvisor

__all__ = ["GVisorBackend", "probe"]


def probe() -> tuple[bool, str]:
    """Can gVisor sandboxes run here? (ok, reason)."""
    return probe_gvisor()
