"""Namespace sandboxes on the host kernel: bubblewrap (``sandbox``) and gVisor (``gvisor``).

- :mod:`.bwrap`: :class:`SandboxBackend`, the bubblewrap backend;
- :mod:`.gvisor`: :class:`GVisorBackend`, the same layout under gVisor's ``runsc``;
- ``_base``: what both share (workspaces, identities, the run lifecycle over the process
  backend's gate, cgroup, output and timeout machinery);
- ``_run``: one run's resources, made ahead so a warm pool can hand them out;
- ``_layout``, ``_rootfs``, ``_init``: where things are inside, the /etc skeleton,
  glasshouse-init (the sandbox's PID 1);
- ``_probe``: cached probes for ``auto`` and real ones for ``glasshouse doctor``.
"""

from __future__ import annotations

from ._base import SandboxBase
from ._init import InitUnavailable, build_init
from ._layout import HOSTNAME, INIT_PATH, INSIDE_GID, INSIDE_UID, INSIDE_WORKSPACE
from ._probe import doctor_checks, probe, probe_gvisor
from ._run import SandboxRun
from .bwrap import SandboxBackend
from .gvisor import GVisorBackend

__all__ = [
    "HOSTNAME",
    "INIT_PATH",
    "INSIDE_GID",
    "INSIDE_UID",
    "INSIDE_WORKSPACE",
    "GVisorBackend",
    "InitUnavailable",
    "SandboxBackend",
    "SandboxBase",
    "SandboxRun",
    "build_init",
    "doctor_checks",
    "probe",
    "probe_gvisor",
]
